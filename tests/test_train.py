"""Training on preprocessed days, and the dataset/model location rules that `train` and the harness share."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from dlrm_bench.criteo.dataset import load_meta, open_split
from dlrm_bench.errors import UserError
from dlrm_bench.model.checkpoint import REFERENCE_EXTRA_KEYS, load_for_dataset
from dlrm_bench.inputs import default_model_path, locate, pick_dataset
from dlrm_bench.model.train import (ThreadTuner, TrainConfig, iter_batches, main, resolve_precision,
                                   thread_candidates, train, training_days)


def _args(**kwargs) -> argparse.Namespace:
    defaults = dict(dataset="auto", dataset_dir=None, model=None, output=None, epochs=1, batch_size=256, lr=None,
                    seed=0, max_rows=None, threads=1)
    return argparse.Namespace(**{**defaults, **kwargs})


def test_training_learns_the_planted_signal(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(TrainConfig(dataset_dir=tiny_dataset, output=tmp_path / "m.pt", batch_size=256,
                               threads=1, progress=False))
    assert result.rows_trained == 4000 and result.test_rows == 1000
    assert result.test_auc > 0.75, f"AUC {result.test_auc:.3f}: the model did not learn"
    ckpt = load_for_dataset(result.checkpoint, load_meta(tiny_dataset).cardinalities)
    assert ckpt.extras["test_auc"] == pytest.approx(result.test_auc)
    assert set(REFERENCE_EXTRA_KEYS) - {"opt_state_dict", "total_loss", "total_accu"} <= set(ckpt.extras)
    assert ckpt.extras["dlrm_bench"]["fingerprint"] == load_meta(tiny_dataset).fingerprint


def test_noise_labels_give_chance_auc(make_dataset, tmp_path: Path) -> None:
    """The AUC test above can fail: on labels without signal the same training stays near 0.5."""
    noise = make_dataset(signal=0.0, test_rows=4000)
    result = train(TrainConfig(dataset_dir=noise, output=tmp_path / "m.pt", batch_size=256, threads=1,
                               progress=False))
    assert abs(result.test_auc - 0.5) < 0.06


def test_main_uses_the_locate_rules_and_reports(tiny_dataset: Path, tmp_path: Path, capsys,
                                                monkeypatch) -> None:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path / "scratch"))
    assert main(_args(dataset_dir=tiny_dataset, max_rows=1000)) == 0
    out = capsys.readouterr().out
    assert "trained on 1,000 pairs" in out and "test AUC" in out
    written = tmp_path / "scratch" / "models" / "dlrm" / "fixture.pt"  # <meta.json name>.pt
    assert written.is_file() and f"checkpoint: {written}" in out


def test_iter_batches_reads_every_row_once(tiny_dataset: Path) -> None:
    splits = [open_split(d) for d in training_days(tiny_dataset)]
    seen = [c.numpy() for _, c, _ in iter_batches(splits, 300, np.random.default_rng(0))]
    assert sum(len(c) for c in seen) == 4000
    got = np.concatenate(seen)
    expected = np.concatenate([np.asarray(s.categorical) for s in splits])
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
    limited = list(iter_batches(splits, 300, np.random.default_rng(0), max_rows=2500))
    assert sum(len(lab) for *_, lab in limited) == 2500


def test_dataset_without_days_is_a_user_error(make_dataset, tmp_path: Path) -> None:
    root = make_dataset(num_days=0)
    with pytest.raises(UserError, match="no training days"):
        train(TrainConfig(dataset_dir=root, output=tmp_path / "m.pt", progress=False))


def test_thread_tuner_keeps_the_faster_count() -> None:
    import torch

    previous = torch.get_num_threads()
    try:
        tuner = ThreadTuner([2, 1], period=10, probe=2, warmup=1)
        seconds_per_batch = {2: 0.5, 1: 0.1}  # as on busy cores: one thread is faster
        chosen = []
        for _ in range(25):
            threads = tuner.threads()
            assert torch.get_num_threads() == threads
            chosen.append(threads)
            tuner.record(threads, seconds_per_batch[threads], 100)
        assert chosen[:5] == [2, 2, 2, 1, 1]  # warm-up, then probe 2 twice, then 1 twice
        assert chosen[5:11] == [1] * 6 and tuner.best == 1
        assert chosen[11:15] == [2, 2, 1, 1] and tuner.most_used() == 1  # the next round probes again
        assert thread_candidates(2) == [2, 1] and thread_candidates(16) == [16, 8, 1]
        fixed = ThreadTuner([1])
        assert [fixed.threads() for _ in range(3)] == [1, 1, 1]
    finally:
        torch.set_num_threads(previous)


def test_precision_choices() -> None:
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("auto") in ("fp32", "bf16")
    with pytest.raises(UserError):
        resolve_precision("fp8")


def test_locate_rules(tmp_path: Path, monkeypatch) -> None:
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(scratch))
    assert pick_dataset("auto") == "synthetic-tiny"
    assert default_model_path("terabyte") == scratch / "models" / "dlrm" / "tb00_40M.pt"
    assert default_model_path("synthetic-small") == scratch / "models" / "dlrm" / "synthetic-small.pt"
    found = locate("auto")
    assert found.dataset == "synthetic-tiny"
    assert found.dataset_dir == scratch / "preprocessed_data" / "criteo" / "synthetic-tiny"
    assert found.model_path == scratch / "models" / "dlrm" / "synthetic-tiny.pt"
    meta_dir = scratch / "preprocessed_data" / "criteo" / "terabyte"
    meta_dir.mkdir(parents=True)
    (meta_dir / "meta.json").write_text(json.dumps({"name": "terabyte"}))
    assert locate("auto").model_path.name == "tb00_40M.pt"
    assert locate("synthetic-small").dataset_dir.name == "synthetic-small"
    assert locate("auto", model=tmp_path / "x.pt").model_path == tmp_path / "x.pt"


def test_locate_with_a_dataset_dir_reads_its_name(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path))
    found = locate("auto", dataset_dir=tiny_dataset)
    assert found.dataset == "fixture" and found.dataset_dir.resolve() == tiny_dataset.resolve()
    assert found.model_path == tmp_path / "models" / "dlrm" / "fixture.pt"
    assert locate("terabyte", dataset_dir=tiny_dataset).model_path.name == "tb00_40M.pt"
