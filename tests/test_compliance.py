"""MLPerf compliance tests TEST01 / TEST05 through the real LoadGen (`dlrm-bench audit`, reference engine).

The model is built by hand so that its AUC is well above 0.5: the bottom MLP passes the 13 dense inputs through,
the top MLP scores them with the dataset's planted dense weights. Its mirror image (the last layer negated, AUC
below 0.5) stands in for an engine that computes something else in performance mode.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mlperf_loadgen as lg
from dlrm_bench import compliance
from dlrm_bench.harness import audit_config
from dlrm_bench.cli import main as cli
from dlrm_bench.errors import UserError
from dlrm_bench.loadgen_logs import read_detail_log
from dlrm_bench.mlperf_rules import test05_seeds as round_test05_seeds
from dlrm_bench.model.checkpoint import save_checkpoint
from dlrm_bench.model.dlrm import DLRM, init_reference
from tests.conftest import TINY_CARDINALITIES, _planted_model, write_preprocessed_dataset

SEED = 3
SHIFT = 50.0


def dense_signal_model(path: Path, sign: float = 1.0) -> Path:
    """logit = sign * (planted dense weights . numeric inputs), through the real DLRM layers (ReLUs kept linear
    by a bias shift of SHIFT)."""
    model = DLRM(list(TINY_CARDINALITIES))
    init_reference(model, torch.Generator().manual_seed(0))
    sd = {k: (v if k.startswith("emb_l.") else torch.zeros_like(v)) for k, v in model.state_dict().items()}
    dense_w, _ = _planted_model(TINY_CARDINALITIES, SEED, 1.0)
    for layer in ("bot_l.0", "bot_l.2", "bot_l.4"):
        sd[f"{layer}.weight"][:13, :13] = torch.eye(13)
    sd["top_l.0.weight"][0, :13] = torch.tensor(dense_w, dtype=torch.float32)
    sd["top_l.0.bias"][0] = SHIFT
    for layer in ("top_l.2", "top_l.4", "top_l.6"):
        sd[f"{layer}.weight"][0, 0] = 1.0
    sd["top_l.8.weight"][0, 0] = sign
    sd["top_l.8.bias"][0] = -sign * SHIFT
    return save_checkpoint(path, sd)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audit")
    data = write_preprocessed_dataset(root / "data", test_rows=2500, num_days=1, rows_per_day=200, max_sample=40,
                                      seed=SEED)
    return {"root": root, "data": data, "model": dense_signal_model(root / "model.pt"), "logs": root / "logs"}


def audit(ws: dict[str, Path], *extra: str, model: Path | None = None, logs: Path | None = None) -> int:
    return cli(["audit", "--dataset-dir", str(ws["data"]), "--model", str(model or ws["model"]), "--engine",
                "reference", "--scenarios", "Offline", "--min_duration", "0.5", "--min_query_count", "1",
                "--log_dir", str(logs or ws["logs"]),
                *extra])


@pytest.fixture(scope="module")
def audited(ws, tmp_path_factory) -> tuple[int, Path]:
    """One `dlrm-bench audit` (TEST01 and TEST05, with their baselines); returns (status, scenario folder)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLPERF_SCRATCH_PATH", str(ws["root"] / "scratch"))
    try:
        status = audit(ws, "--offline_expected_qps", "400")
    finally:
        mp.undo()
    return status, next((ws["logs"] / "latest").glob("*/dlrm/Offline/default"))


def last_line(path: Path) -> str:
    return path.read_text().rstrip().splitlines()[-1]


def score(summary: Path) -> tuple[float, str]:
    """(Samples per second, Result is) read from a summary independently of the module under test."""
    text = summary.read_text()
    value = float(re.search(r"^Samples per second\s*:\s*([\d.e+]+)", text, re.M).group(1))
    return value, re.search(r"^Result is\s*:\s*(\w+)", text, re.M).group(1)


def test_audit_writes_the_tree_and_configs(audited):
    status, base = audited
    for name in ("PerformanceOnly", "AccuracyOnly", "TEST01", "TEST05"):
        assert (base / name / "mlperf_log_summary.txt").exists() and (base / name / "throughput.png").exists()
    assert audit_config.read_audit_config(base / "TEST01" / "audit.config", "Offline") == {
        "mode": "2", "accuracy_log_rng_seed": "720381539243781796", "accuracy_log_sampling_target": "4096"}
    keys = audit_config.read_audit_config(base / "TEST05" / "audit.config", "Offline")
    assert keys["test05"] == "1" and keys["test05_qsl_rng_seed"] == "14646058500348515648"
    verdicts = [last_line(base / t / f"verify_{c}.txt") for t, c in
                (("TEST01", "accuracy"), ("TEST01", "performance"), ("TEST05", "performance"))]
    assert all(v == "TEST PASS" or v.startswith("TEST FAIL") for v in verdicts)
    assert status == (0 if all(v == "TEST PASS" for v in verdicts) else 1)


def test_loadgen_applied_each_audit_config(audited):
    _, base = audited
    plain = read_detail_log(base / "PerformanceOnly" / "mlperf_log_detail.txt")
    test01 = read_detail_log(base / "TEST01" / "mlperf_log_detail.txt")
    test05 = read_detail_log(base / "TEST05" / "mlperf_log_detail.txt")
    assert "Found Audit Config file" in (base / "TEST01" / "mlperf_log_detail.txt").read_text()
    assert test01["effective_accuracy_log_sampling_target"] == 4096
    assert test01["effective_test_mode"] == test05["effective_test_mode"] == "PerformanceOnly"
    assert "Test05 flag detected" in (base / "TEST05" / "mlperf_log_detail.txt").read_text()
    for name, value in round_test05_seeds().items():
        assert test05[f"effective_{name}"] == value != plain[f"effective_{name}"]
    assert compliance.verify_audit_took_effect("TEST05", base / "TEST05") == []
    assert compliance.verify_audit_took_effect("TEST01", base / "PerformanceOnly") != []


def test_test01_logged_predictions_match_the_accuracy_run(audited, ws):
    _, base = audited
    accuracy = {e["qsl_idx"]: np.frombuffer(bytes.fromhex(e["data"]), "<f4")
                for e in json.loads((base / "AccuracyOnly" / "mlperf_log_accuracy.json").read_text())}
    logged = json.loads((base / "TEST01" / "mlperf_log_accuracy.json").read_text())
    assert len(logged) > 100  # 4096 / expected samples > 1: every sample is logged
    for entry in logged:
        np.testing.assert_allclose(np.frombuffer(bytes.fromhex(entry["data"]), "<f4"), accuracy[entry["qsl_idx"]],
                                   rtol=1e-5, atol=1e-6)
    text = (base / "TEST01" / "verify_accuracy.txt").read_text()
    assert f"num_perf_log_entries = {len(logged)}" in text and "num_missing_qsl_idxs = 0" in text
    assert last_line(base / "TEST01" / "verify_accuracy.txt") == "TEST PASS"
    result = json.loads((base / "AccuracyOnly" / "result.json").read_text())
    assert result["auc"] > 0.6  # the hand-built model has signal


@pytest.mark.parametrize("test", ["TEST01", "TEST05"])
def test_performance_verdict_follows_the_numbers(audited, test):
    _, base = audited
    ref, ref_valid = score(base / "PerformanceOnly" / "mlperf_log_summary.txt")
    new, new_valid = score(base / test / "mlperf_log_summary.txt")
    ratio = new / ref
    expected = (0.9 < ratio < 1.1) if test == "TEST01" else ratio > 0.95
    expected = expected and ref_valid == new_valid == "VALID"
    verdict = last_line(base / test / "verify_performance.txt")
    assert verdict == ("TEST PASS" if expected else verdict) and (verdict == "TEST PASS") == expected
    result = json.loads((base / test / "result.json").read_text())
    assert result["compliance_test"] == test and result["compliance_checks"]["performance"] == expected


def test_report_lists_the_compliance_runs(audited, capsys):
    _, base = audited
    assert cli(["report", str(base.parents[3])]) == 0
    out = capsys.readouterr().out
    assert re.search(r"Offline\s+default\s+TEST01\s.*TEST (PASS|FAIL)", out)
    assert re.search(r"Offline\s+default\s+TEST05\s.*TEST (PASS|FAIL)", out)


def test_engine_computing_something_else_fails_test01(audited, ws, tmp_path, monkeypatch):
    """The baseline runs of the audit above (--results); the performance run now uses other weights."""
    _, base = audited
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(ws["root"] / "scratch"))
    model = tmp_path / "model.pt"
    shutil.copy(ws["model"], model)
    accuracy_run = base / "AccuracyOnly" / "result.json"
    results = tmp_path / "results"
    shutil.copytree(base.parents[3], results)
    for path in results.rglob("result.json"):  # the same runs, recorded for this model path
        r = json.loads(path.read_text())
        r["model_path"] = str(model)
        path.write_text(json.dumps(r))
    dense_signal_model(model, sign=-1.0)  # "new weights" that the accuracy run did not see
    logs = tmp_path / "logs"
    assert audit(ws, "--test", "TEST01", "--results", str(results), "--offline_expected_qps", "400", model=model,
                 logs=logs) == 1
    out = next((logs / "latest").glob("*/dlrm/Offline/default/TEST01"))
    text = (out / "verify_accuracy.txt").read_text()
    assert last_line(out / "verify_accuracy.txt").startswith("TEST FAIL: logged predictions differ")
    assert "relative AUC delta" in text and accuracy_run.exists()
    assert not (out.parent / "PerformanceOnly").exists()  # the baselines came from --results


def test_invalid_test_run_fails_and_missing_baseline_is_named(audited, ws, tmp_path, monkeypatch, capsys):
    _, base = audited
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(ws["root"] / "scratch"))
    logs = tmp_path / "logs"
    # The baseline's own validity depends on this machine's speed (a short Offline run is VALID only when it
    # outlasts min_duration): pin it to VALID in a copy, so that only the test run's invalidity is exercised.
    results = tmp_path / "results"
    shutil.copytree(base.parents[3], results)
    for summary in results.rglob("PerformanceOnly/mlperf_log_summary.txt"):
        summary.write_text(summary.read_text().replace("Result is : INVALID", "Result is : VALID"))
    # 1.1 x 2 samples/s x 0.5 s: LoadGen's query ends before min_duration -> INVALID
    assert audit(ws, "--test", "TEST05", "--results", str(results), "--offline_expected_qps", "2",
                 logs=logs) == 1
    out = next((logs / "latest").glob("*/dlrm/Offline/default/TEST05"))
    assert last_line(out / "verify_performance.txt") == "TEST FAIL: test results are invalid"
    assert audit(ws, "--test", "TEST05", "--results", str(tmp_path / "logs" / "nothing"), logs=logs) == 2
    assert "not a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert audit(ws, "--test", "TEST05", "--results", str(empty), logs=logs) == 2
    err = capsys.readouterr().err
    assert "no Offline default PerformanceOnly run of the reference engine" in err and "Traceback" not in err


def _rewrite_score(src: Path, dst: Path, factor: float, key: str = "Samples per second") -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    text = src.read_text()
    value = float(re.search(rf"^{key}\s*:\s*([\d.e+]+)", text, re.M).group(1))
    (dst / "mlperf_log_summary.txt").write_text(re.sub(rf"^({key}\s*:\s*)[\d.e+]+", rf"\g<1>{value * factor}",
                                                       text, flags=re.M))
    return dst


@pytest.mark.parametrize("test, factor, passed", [
    ("TEST01", 1.0, True), ("TEST01", 1.09, True), ("TEST01", 0.91, True), ("TEST01", 1.11, False),
    ("TEST01", 0.89, False), ("TEST05", 0.96, True), ("TEST05", 3.0, True), ("TEST05", 0.94, False)])
def test_performance_thresholds_on_a_real_summary(audited, tmp_path, test, factor, passed):
    """A real (VALID) Offline summary against a copy whose score is scaled: MLPerf's thresholds."""
    _, base = audited
    real = base / "PerformanceOnly" / "mlperf_log_summary.txt"
    # A short Offline run is VALID only when it outlasts min_duration, which depends on this machine's speed:
    # pin the copy to VALID, so that only the thresholds are exercised.
    ref = tmp_path / "ref" / "mlperf_log_summary.txt"
    ref.parent.mkdir()
    ref.write_text(real.read_text().replace("Result is : INVALID", "Result is : VALID"))
    assert score(ref)[1] == "VALID"
    check = compliance.verify_performance(test, ref.parent, _rewrite_score(ref, tmp_path / "t", factor))
    assert check.passed is passed
    assert check.lines[-1] == ("TEST PASS" if passed else "TEST FAIL: Test score invalid")


def test_apply_audit_settings_sets_the_test05_fields(tmp_path):
    path = tmp_path / "audit.config"
    path.write_text(compliance.audit_config_text("TEST05"))
    ts = lg.TestSettings()
    audit_config.apply_audit_settings(ts, path, "Offline")
    assert ts.test05 and ts.test05_qsl_rng_seed == 14646058500348515648
    assert ts.test05_schedule_rng_seed == 11879132697760422006
    # older TEST05 configs name plain seed keys; model- and scenario-specific keys win over wildcards
    path.write_text("*.*.mode = 2\n*.*.qsl_rng_seed = 11\n*.Offline.qsl_rng_seed = 12  # comment\n"
                    "dlrm.Offline.sample_index_rng_seed = 13\nresnet50.*.schedule_rng_seed = 99\n")
    ts = lg.TestSettings()
    audit_config.apply_audit_settings(ts, path, "Offline")
    assert (ts.test05, ts.test05_qsl_rng_seed, ts.test05_sample_index_rng_seed) == (True, 12, 13)
    assert ts.test05_schedule_rng_seed == round_test05_seeds()["schedule_rng_seed"]
    path.write_text(compliance.audit_config_text("TEST01"))
    ts = lg.TestSettings()
    audit_config.apply_audit_settings(ts, path, "Server")
    assert not ts.test05
    path.write_text("mode 2\n")
    with pytest.raises(UserError, match=r"audit.config:1: expected 'model.scenario.key = value'"):
        audit_config.apply_audit_settings(lg.TestSettings(), path, "Offline")


@pytest.mark.parametrize("test, scenario, ref, new, passed", [
    ("TEST05", "SingleStream", 1e6, 1.04e6, True), ("TEST05", "SingleStream", 1e6, 1.06e6, False),
    ("TEST05", "SingleStream", 1.5e5, 1.75e5, True), ("TEST05", "SingleStream", 1.5e5, 1.85e5, False),
    ("TEST01", "SingleStream", 1e6, 0.91e6, True), ("TEST01", "Server", 100.0, 111.0, False),
    ("TEST05", "Server", 100.0, 94.0, False)])
def test_latency_and_server_rules(test, scenario, ref, new, passed):
    """SingleStream compares latencies (lower is better; 20% slack at or below 0.2 ms), as MLPerf's scripts do."""
    assert compliance._compare(test, scenario, ref, new)[0] is passed
