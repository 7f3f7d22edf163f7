"""Reading and scoring LoadGen accuracy logs: binary files, logs that lack samples, indices outside the partition
(through `dlrm-bench accuracy` on a small preprocessed dataset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlrm_bench.accuracy import AccuracyResult, gather_predictions, read_accuracy_log, score_log
from dlrm_bench.cli import main as cli_main
from dlrm_bench.criteo.dataset import open_partition, open_split
from dlrm_bench.errors import DataError
from tests.conftest import save_random_model


def write_log(path: Path, offsets: np.ndarray, indices: list[int]) -> Path:
    """An mlperf_log_accuracy.json with one entry per index: predictions 0.5 + pair row / 1e6 (float32 hex)."""
    entries = []
    for seq, idx in enumerate(indices):
        lo, hi = (int(offsets[idx]), int(offsets[idx + 1])) if idx >= 0 else (0, 1)
        preds = (0.5 + np.arange(lo, hi) / 1e6).astype(np.float32)
        entries.append({"seq_id": seq, "qsl_idx": idx, "data": preds.tobytes().hex()})
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture
def scored(tiny_dataset, tmp_path, monkeypatch):
    """(CLI arguments up to --log, partition offsets): the tiny dataset and a random model beside it."""
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path / "scratch"))
    model = save_random_model(tmp_path / "model.pt")
    offsets = open_partition(tiny_dataset / "test", len(open_split(tiny_dataset / "test")))
    return ["accuracy", "--dataset-dir", str(tiny_dataset), "--model", str(model)], offsets


def test_binary_log_is_a_data_error(tmp_path, scored, capsys):
    log = tmp_path / "mlperf_log_accuracy.json"
    log.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match=rf"^{log}: not a LoadGen accuracy log: not UTF-8 JSON$"):
        read_accuracy_log(log)
    assert cli_main([*scored[0], "--log", str(log)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8 JSON" in err and "Traceback" not in err


def test_log_without_every_sample_is_refused(tmp_path, scored, capsys):
    args, offsets = scored
    total = len(offsets) - 1
    log = write_log(tmp_path / "partial.json", offsets, [0, 2, 5])
    assert cli_main([*args, "--log", str(log)]) == 2
    out, err = capsys.readouterr()
    assert f"{log}: 3 of {total} samples logged, missing qsl_idx 1, 3, 4, 6, 7, ..." in err and "AUC" not in out


def test_complete_log_is_scored_and_a_subset_only_when_asked(tmp_path, scored, capsys):
    args, offsets = scored
    total = len(offsets) - 1
    order = list(np.random.default_rng(1).permutation(total)) + [3]  # any order, a sample logged twice
    log = write_log(tmp_path / "full.json", offsets, [int(i) for i in order])
    assert cli_main([*args, "--log", str(log)]) == 0
    assert f"samples={total}" in capsys.readouterr().out
    subset = write_log(tmp_path / "subset.json", offsets, [4, 1])
    split = open_split(Path(args[2]) / "test")
    with pytest.raises(DataError, match="2 of"):
        score_log(subset, split, offsets)
    _, pairs, samples = score_log(subset, split, offsets, require_all=False)
    assert (pairs, samples) == (offsets[2] - offsets[1] + offsets[5] - offsets[4], 2)


def test_index_outside_the_partition_is_named(tmp_path, scored):
    _, offsets = scored
    total = len(offsets) - 1
    logged = read_accuracy_log(write_log(tmp_path / "neg.json", offsets, [*range(total), -3]))
    with pytest.raises(DataError, match=rf"sample index -3 outside the partition's {total} samples"):
        gather_predictions(logged, offsets, tmp_path / "neg.json")
    logged[total] = logged.pop(-3)
    with pytest.raises(DataError, match=rf"sample index {total} outside"):
        gather_predictions(logged, offsets, tmp_path / "neg.json", require_all=False)


def test_the_real_data_is_judged_by_mlperf_s_absolute_auc() -> None:
    # an error that lowers the model's AUC and the FP32 reference alike passes the relative rule only
    lowered = dict(auc=0.7940, pairs=10, samples=2, auc_fp32_reference=0.7945, target_fraction=0.99)
    relative, absolute = AccuracyResult(**lowered), AccuracyResult(**lowered, absolute=True)
    assert relative.passed and relative.rule == "relative" and relative.target_auc == pytest.approx(0.786555)
    assert not absolute.passed and absolute.rule == "absolute" and absolute.target_auc == pytest.approx(0.794475)
    assert "79.4475%" in absolute.text() and "absolute rule" in absolute.text() and "FAIL" in absolute.text()
    high = AccuracyResult(0.8017, 10, 2, 0.8025, 0.999, absolute=True)
    assert high.target_auc == pytest.approx(0.80169750) and high.passed
