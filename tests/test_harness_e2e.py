"""The benchmark end to end through the real LoadGen: `dlrm-bench run` on a small dataset and model.

Checks the AccuracyOnly AUC against a direct scikit-learn computation on the same logged predictions (parsed
here independently), the predictions against the reference engine called directly, the output contract (log
tree, result.json fields, latest link, table), and the clear errors for bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dlrm_bench.cli import main as cli
from dlrm_bench.criteo.dataset import load_meta, open_split
from dlrm_bench.engines import create_engine
from dlrm_bench.harness.cpu_affinity import STARTED_WITH, compact
from dlrm_bench.loadgen_logs import read_detail_log
from dlrm_bench.model.checkpoint import save_checkpoint
from dlrm_bench.model.dlrm import DLRM
from tests.conftest import TINY_CARDINALITIES, make_workspace, save_random_model, write_preprocessed_dataset

RESULT_FIELDS = ("scenario", "config_ver", "test_mode", "engine", "device", "dataset", "dataset_dir", "model_path",
                 "samples_per_second", "pairs_per_second", "result_valid", "latency_p99_ms", "auc",
                 "auc_fp32_reference", "auc_ratio", "accuracy_target", "accuracy_passed")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_workspace(tmp_path_factory.mktemp("e2e"), rows_per_day=500)


def run(ws: dict[str, Path], *extra: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(ws["root"] / "scratch"))
    return cli(["run", "--dataset-dir", str(ws["data"]), "--model", str(ws["model"]), "--engine", "reference",
                "--log_dir", str(ws["logs"]), *extra])


def newest_result(ws: dict[str, Path], scenario: str, mode: str) -> tuple[Path, dict]:
    paths = sorted((ws["logs"] / "latest").glob(f"*/dlrm/{scenario}/*/{mode}/result.json"))
    assert paths, f"no result.json for {scenario} {mode}"
    return paths[0].parent, json.loads(paths[0].read_text())


def parse_log_independently(log: Path, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, pair rows) from mlperf_log_accuracy.json, without the project's parser."""
    preds, rows = [], []
    for entry in json.loads(log.read_text()):
        idx = entry["qsl_idx"]
        values = np.frombuffer(bytes.fromhex(entry["data"]), dtype="<f4")
        preds.append(values)
        rows.append(np.arange(offsets[idx], offsets[idx + 1]))
    return np.concatenate(preds), np.concatenate(rows)


def test_offline_accuracy_run_auc_matches_direct_computation(workspace, monkeypatch, capsys) -> None:
    assert run(workspace, "--scenarios", "Offline", "--test_mode", "AccuracyOnly", monkeypatch=monkeypatch) == 0
    out_dir, result = newest_result(workspace, "Offline", "AccuracyOnly")
    split = open_split(workspace["data"] / "test")
    offsets = np.load(workspace["data"] / "test" / "sample_partition.npy")
    preds, rows = parse_log_independently(out_dir / "mlperf_log_accuracy.json", offsets)
    assert np.unique(rows).size == rows.size == len(split)  # every pair exactly once
    labels = np.asarray(split.labels)[rows]
    assert result["auc"] == pytest.approx(roc_auc_score(labels, preds), abs=1e-12)
    engine = create_engine("reference", workspace["model"], load_meta(workspace["data"]))
    engine.load(split)
    direct = engine.predict(np.asarray(split.numeric)[rows], np.asarray(split.categorical)[rows])
    np.testing.assert_allclose(preds, direct, rtol=1e-5, atol=1e-7)
    assert result["auc_ratio"] == pytest.approx(1.0, abs=1e-6)  # the reference engine is its own reference
    assert result["accuracy_passed"] is True and result["result"] == "PASS"
    assert result["accuracy_rule"] == "relative"  # not the real Terabyte data
    assert result["accuracy_target_auc"] == pytest.approx(0.99 * result["auc_fp32_reference"])
    assert (out_dir / "accuracy.txt").read_text().startswith("AUC=")
    assert "PASS" in capsys.readouterr().out


def test_performance_runs_write_the_output_contract(workspace, monkeypatch, capsys) -> None:
    every_cpu = compact(STARTED_WITH)  # pinned to all the CPUs it has: nothing changes for the later tests
    status = run(workspace, "--scenarios", "Offline,Server", "--test_mode", "PerformanceOnly",
                 "--min_duration", "1", "--min_query_count", "50", "--server_target_qps", "20",
                 "--offline_expected_qps", "200", "--set", f"cpu_affinity={every_cpu}", monkeypatch=monkeypatch)
    assert status == 0
    for scenario in ("Offline", "Server"):
        out_dir, result = newest_result(workspace, scenario, "PerformanceOnly")
        assert set(RESULT_FIELDS) <= set(result)
        assert (out_dir / "mlperf_log_summary.txt").exists() and (out_dir / "mlperf_log_detail.txt").exists()
        assert result["samples_per_second"] > 0
        assert result["pairs_per_second"] == pytest.approx(result["samples_per_second"] * result["pairs_per_sample"])
        assert result["shortened_run"] is True
        assert result["cpu_affinity"] == sorted(STARTED_WITH)
        assert result["mlperf_round"] == "v3.0" and result["result"] in ("VALID", "INVALID")
        detail = read_detail_log(out_dir / "mlperf_log_detail.txt")  # what LoadGen itself used: v3.0's seeds
        assert (detail["effective_qsl_rng_seed"], detail["effective_sample_index_rng_seed"],
                detail["effective_schedule_rng_seed"]) == (10003631887983097364, 17183018601990103738,
                                                           12134888396634371638)
    _, server = newest_result(workspace, "Server", "PerformanceOnly")
    assert server["latency_p99_ms"] is not None
    text = capsys.readouterr().out
    assert "samples/s" in text and "pairs/s" in text and "Server" in text


@pytest.mark.parametrize("args, message", [
    (["--scenarios", "Offlin"], "unknown scenario"),
    (["--config_ver", "fast"], "unknown config_ver"),
    (["--test_mode", "Both"], "unknown test_mode"),
    (["--benchmarks", "resnet"], "unknown benchmark"),
    (["--set", "batch_size=-3"], "--set: setting 'batch_size' is -3: expected an integer >= 1"),
    (["--set", "cpu_affinity=4096"], "setting 'cpu_affinity' is '4096': CPU(s) 4096 not available to this process"),
])
def test_bad_flags_exit_2_with_one_line(workspace, monkeypatch, capsys, args, message) -> None:
    assert run(workspace, *args, monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_dataset_is_named(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path))
    assert cli(["run", "--dataset-dir", str(tmp_path / "nowhere"), "--engine", "reference"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_bad_set_value_stops_the_run_before_the_dataset_loads(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path))
    assert cli(["run", "--dataset-dir", str(tmp_path / "nowhere"), "--set", "gpu_num_bundles=0"]) == 2
    err = capsys.readouterr().err
    assert "--set: setting 'gpu_num_bundles' is 0" in err and "nowhere" not in err and "Traceback" not in err


def test_model_that_does_not_match_the_dataset(workspace, tmp_path, monkeypatch, capsys) -> None:
    other = DLRM([c + 1 for c in TINY_CARDINALITIES])
    bad = save_checkpoint(tmp_path / "other.pt", other.state_dict())
    ws = {**workspace, "model": bad}
    assert run(ws, "--test_mode", "AccuracyOnly", monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert "emb_l.0.weight" in err and "Traceback" not in err


def test_unwritable_log_directory(workspace, tmp_path, monkeypatch, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ws = {**workspace, "logs": blocker / "logs"}
    assert run(ws, "--test_mode", "AccuracyOnly", monkeypatch=monkeypatch) == 2
    assert "not writable" in capsys.readouterr().err


def test_truncated_npy_is_named(tmp_path, monkeypatch, capsys) -> None:
    data = write_preprocessed_dataset(tmp_path / "data", test_rows=200, num_days=1, rows_per_day=100)
    path = data / "test" / "categorical_int32.npy"
    path.write_bytes(path.read_bytes()[:500])
    model = save_checkpoint(tmp_path / "m.pt", DLRM(TINY_CARDINALITIES).state_dict())
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path))
    assert cli(["run", "--dataset-dir", str(data), "--model", str(model), "--engine", "reference",
                "--log_dir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert "categorical_int32.npy" in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--min_duration", "-5"], "--min_duration/--min-duration: expected seconds >= 0, found -5"),
    (["--min_query_count", "-5"], "--min_query_count/--min-query-count: expected an integer >= 1, found -5"),
    (["--min_duration", "0", "--min_query_count", "0"], "expected an integer >= 1, found 0"),  # LoadGen segfaulted
    (["--server_target_qps", "nan"], "expected samples/s > 0, found nan"),
])
def test_bad_numbers_are_usage_errors(workspace, monkeypatch, capsys, args, message) -> None:
    with pytest.raises(SystemExit) as stop:
        run(workspace, *args, monkeypatch=monkeypatch)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_bad_engine_and_config_files_are_named(workspace, tmp_path, monkeypatch, capsys) -> None:
    assert run(workspace, "--set", "engine=gpu", monkeypatch=monkeypatch) == 2
    assert """setting 'engine' is "gpu": expected one of""" in capsys.readouterr().err
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert run(workspace, "--config", str(listed), monkeypatch=monkeypatch) == 2
    err = capsys.readouterr().err
    assert f"{listed}: expected a JSON object at the top, found a list" in err and "Traceback" not in err


def test_a_named_model_that_is_missing_or_empty_is_never_trained(workspace, tmp_path, monkeypatch, capsys) -> None:
    missing = tmp_path / "nowhere" / "model.pt"
    # synthetic-tiny is the name whose default model is trained when absent; a named one must exist
    assert run({**workspace, "model": missing}, "--dataset", "synthetic-tiny", monkeypatch=monkeypatch) == 2
    assert f"model {missing} not found" in capsys.readouterr().err and not missing.parent.exists()
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert run({**workspace, "model": empty}, monkeypatch=monkeypatch) == 2
    assert "the checkpoint file is empty (0 bytes)" in capsys.readouterr().err and empty.stat().st_size == 0


def test_a_start_that_fails_leaves_no_log_folder(tmp_path, monkeypatch, capsys) -> None:
    from dlrm_bench.quant import artifacts

    data = write_preprocessed_dataset(tmp_path / "data", test_rows=300, num_days=1, rows_per_day=200)
    model = save_random_model(tmp_path / "models" / "m.pt")
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path / "scratch"))
    folder = artifacts.generate_engines(model, load_meta(data))
    with open(folder / "dlrm_embedding_weights_int8_v3.bin", "r+b") as f:  # same size, first block changed
        f.seek(100)
        f.write(b"\x55")
    logs = tmp_path / "logs"
    assert cli(["run", "--dataset-dir", str(data), "--model", str(model), "--engine", "cpu", "--log_dir",
                str(logs)]) == 2
    err = capsys.readouterr().err
    assert "dlrm_embedding_weights_int8_v3.bin" in err and "make generate_engines" in err
    assert not list(logs.iterdir())  # the engine failed to load: no empty <timestamp> folder, no `latest`


def test_a_full_disk_fails_the_run_and_leaves_no_result_looking_log(workspace, tmp_path, monkeypatch,
                                                                    capsys) -> None:
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(small)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        assert run({**workspace, "logs": small}, "--test_mode", "PerformanceOnly", "--min_duration", "0.2",
                   monkeypatch=monkeypatch) == 2
        err = capsys.readouterr().err
        assert "FAILED" in err and "Traceback" not in err
        assert not list(small.rglob("mlperf_log_summary.txt")) and list(small.rglob("*.FAILED"))
    finally:
        subprocess.run(["umount", str(small)], check=False)
