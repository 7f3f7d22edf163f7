"""The MLPerf v3.0 submission tree: staging real LoadGen runs (a tiny dataset, the reference engine, short runs:
`dlrm-bench audit` makes the PerformanceOnly, AccuracyOnly, TEST01 and TEST05 runs of Offline and Server), the
refusals before staging, the accuracy log truncation, the system description and the project's own checks."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from dlrm_bench.cli import main as cli
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.submission import runs, system_json
from dlrm_bench.submission.check import check_tree
from dlrm_bench.submission.truncate import truncate_accuracy_log
from dlrm_bench.system import detect_system
from tests.conftest import write_preprocessed_dataset
from tests.test_compliance import SEED, dense_signal_model

V30_SYSTEM_FIELDS = """division submitter status system_name number_of_nodes host_processor_model_name
    host_processors_per_node host_processor_core_count host_memory_capacity host_storage_capacity host_storage_type
    accelerators_per_node accelerator_model_name accelerator_memory_capacity framework operating_system system_type
    other_software_stack host_processor_frequency host_processor_caches host_memory_configuration
    host_processor_interconnect host_networking host_networking_topology accelerator_frequency
    accelerator_host_interconnect accelerator_interconnect accelerator_interconnect_topology
    accelerator_memory_configuration accelerator_on-chip_memories cooling hw_notes sw_notes""".split()
"""MLPerf Inference v3.0's required system description fields (tools/submission/submission_checker.py at v3.0)."""
SYSTEM = {"system_name": "Test host", "status": "available", "system_type": "datacenter", "cooling": "air"}


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """One `dlrm-bench audit` of Offline and Server: the plain runs and TEST01 / TEST05 of each."""
    root = tmp_path_factory.mktemp("submission")
    data = write_preprocessed_dataset(root / "data", test_rows=2500, num_days=1, rows_per_day=200, max_sample=40,
                                      seed=SEED)
    model = dense_signal_model(root / "model.pt")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLPERF_SCRATCH_PATH", str(root / "scratch"))
    try:
        cli(["audit", "--dataset-dir", str(data), "--model", str(model), "--engine", "reference", "--scenarios",
             "Offline,Server", "--min_duration", "0.5", "--min_query_count", "1", "--offline_expected_qps", "400",
             "--server_target_qps", "100", "--log_dir", str(root / "logs")])
    finally:
        mp.undo()
    return root / "logs"


def system_file(tmp_path: Path, **fields: object) -> Path:
    path = tmp_path / "system.json"
    path.write_text(json.dumps({**SYSTEM, **fields}))
    return path


def stage(logs: Path, tmp_path: Path, division: str, *extra: str) -> int:
    return cli(["stage-results", "--submitter", "Org", "--division", division, "--log-dir", str(logs),
                "--output", str(tmp_path / "out"), "--system-file", str(system_file(tmp_path)), *extra])


def copy_of(logs: Path, tmp_path: Path) -> Path:
    """A copy of the log tree whose runs all count as VALID (a short run's verdict depends on this machine's speed),
    so that a test sees only the change it makes."""
    target = tmp_path / "logs"
    shutil.copytree(logs, target, symlinks=True)
    for detail in target.glob("[0-9]*/*/dlrm/*/*/*/mlperf_log_detail.txt"):
        detail.write_text(re.sub(r'("key": "result_validity", "value": )"INVALID"', r'\1"VALID"', detail.read_text()))
    return target


def run_folder(logs: Path, scenario: str, kind: str) -> Path:
    return next(logs.glob(f"[0-9]*/*/dlrm/{scenario}/default/{kind}"))


def problems(logs: Path, division: str) -> str:
    return "\n".join(runs.problems(runs.find_runs(logs)[0], division))


@pytest.fixture(scope="module")
def staged(logs, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("staged")
    assert stage(logs, tmp, "closed", "--allow-unsubmittable") == 0
    return next((tmp / "out" / "closed" / "Org" / "results").iterdir()).parents[1]


def test_truncation_keeps_the_first_and_last_4kb_and_hashes_the_whole_log(tmp_path):
    body = "".join(f'{{ "seq_id" : {i}, "qsl_idx" : {i}, "data" : "{i:08X}" }},\n' for i in range(2000))
    source = tmp_path / "mlperf_log_accuracy.json"
    source.write_text(f"[\n{body}]\n")
    raw = source.read_bytes()
    sha = truncate_accuracy_log(source, tmp_path / "out" / "log.json")
    assert sha == hashlib.sha256(raw).hexdigest()
    assert (tmp_path / "out" / "log.json").read_bytes() == raw[:4096] + b"\n\n...\n\n" + raw[-4096:]
    small = tmp_path / "small.json"
    small.write_text('[\n{ "seq_id" : 0, "qsl_idx" : 0, "data" : "00" }\n]\n')
    assert truncate_accuracy_log(small, tmp_path / "small_out.json") == hashlib.sha256(small.read_bytes()).hexdigest()
    assert (tmp_path / "small_out.json").read_bytes() == small.read_bytes()  # nothing to cut


def test_staged_tree_from_real_runs(staged, logs):
    system = next((staged / "results").iterdir()).name
    for scenario in ("Offline", "Server"):
        results = staged / "results" / system / "dlrm-99" / scenario
        perf = run_folder(logs, scenario, "PerformanceOnly")
        assert sorted(p.name for p in (results / "performance" / "run_1").iterdir()) == [
            "mlperf_log_detail.txt", "mlperf_log_summary.txt"]
        for name in ("mlperf_log_detail.txt", "mlperf_log_summary.txt"):
            assert (results / "performance" / "run_1" / name).read_bytes() == (perf / name).read_bytes()
        accuracy, source = results / "accuracy", run_folder(logs, scenario, "AccuracyOnly")
        full = (source / "mlperf_log_accuracy.json").read_bytes()
        assert (accuracy / "mlperf_log_accuracy.json").read_bytes() == full[:4096] + b"\n\n...\n\n" + full[-4096:]
        text = (accuracy / "accuracy.txt").read_text()
        assert re.match(r"AUC=[\d.]+%", text) and f"\nhash={hashlib.sha256(full).hexdigest()}\n" in text
        test01 = staged / "compliance" / system / "dlrm-99" / scenario / "TEST01"
        assert {p.name for p in (test01 / "accuracy").iterdir()} == {"accuracy.txt", "mlperf_log_accuracy.json"}
        assert (test01 / "verify_accuracy.txt").exists() and (test01 / "performance" / "run_1").is_dir()
        assert (staged / "compliance" / system / "dlrm-99" / scenario / "TEST05" / "verify_performance.txt").exists()
        measurements = staged / "measurements" / system / "dlrm-99" / scenario
        described = json.loads((measurements / f"{system}_dlrm-bench-reference_{scenario}.json").read_text())
        assert {"input_data_types", "retraining", "starting_weights_filename", "weight_data_types",
                "weight_transformations"} <= set(described)
        detail = [json.loads(line[len(":::MLLOG "):]) for line in (perf / "mlperf_log_detail.txt").read_text()
                  .splitlines() if line.startswith(":::MLLOG ")]
        qps = next(e["value"] for e in detail if e["key"] == "effective_target_qps")
        assert f"dlrm.{scenario}.target_qps = {qps}\n" in (measurements / "user.conf").read_text()
        assert "*.*.qsl_rng_seed = 10003631887983097364" in (measurements / "mlperf.conf").read_text()
        assert f"--scenarios={scenario} --config_ver=default --engine=reference" in (
            measurements / "README.md").read_text()
    described = json.loads((staged / "systems" / f"{system}.json").read_text())
    assert sorted(described) == sorted(V30_SYSTEM_FIELDS + ["is_network"]) and described["is_network"] == "False"
    assert described["division"] == "closed" and described["submitter"] == "Org" and described["cooling"] == "air"
    assert (staged / "code" / (staged / "code" / "dlrm-99").read_text().strip() / "README.md").exists()
    readme = (staged / "README.md").read_text()
    assert "## Exceptions" in readme and "short run" in readme and "dataset fixture" in readme


def test_closed_division_refuses_synthetic_short_runs(logs, tmp_path, capsys):
    assert stage(logs, tmp_path, "closed") == 2
    err = capsys.readouterr().err
    for reason in ("short run: effective_min_duration_ms = 500", "performance sample count",
                   "dataset fixture: the closed division needs the real Criteo Terabyte data", "--allow-unsubmittable"):
        assert reason in err
    assert not (tmp_path / "out").exists()


def _invalid(logs: Path) -> None:
    detail = run_folder(logs, "Offline", "PerformanceOnly") / "mlperf_log_detail.txt"
    detail.write_text(re.sub(r'("key": "result_validity", "value": )"VALID"', r'\1"INVALID"', detail.read_text()))


def _failed(logs: Path) -> None:
    folder = run_folder(logs, "Server", "PerformanceOnly")
    result = json.loads((folder / "result.json").read_text())
    (folder / "result.json").write_text(json.dumps({**result, "result": "FAILED"}))


def _accuracy_failed(logs: Path) -> None:
    path = run_folder(logs, "Server", "AccuracyOnly") / "result.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "accuracy_passed": False}))


@pytest.mark.parametrize("change, division, expected", [
    (_invalid, "open", "Offline/default/PerformanceOnly/mlperf_log_detail.txt: result_validity = INVALID"),
    (lambda logs: shutil.rmtree(run_folder(logs, "Offline", "AccuracyOnly")), "open",
     "dlrm-99/Offline: no AccuracyOnly run"),
    (lambda logs: shutil.rmtree(run_folder(logs, "Server", "TEST05")), "closed", "dlrm-99/Server: no TEST05 run"),
    (_failed, "open", "dlrm-99/Server: no PerformanceOnly run"),  # a FAILED run is never staged
    (_accuracy_failed, "open", "AccuracyOnly/accuracy.txt: accuracy FAIL"),
    (lambda logs: shutil.rmtree(run_folder(logs, "Offline", "PerformanceOnly")), "closed", "no PerformanceOnly"),
])
def test_each_refusal(logs, tmp_path, change, division, expected):
    copy = copy_of(logs, tmp_path)
    assert expected not in problems(copy, division)
    change(copy)
    assert expected in problems(copy, division)


def _through_the_network(logs: Path, sut: str = "network") -> None:
    """Mark every run as made through the network SUT (their LoadGen logs keep the local SUT's name)."""
    for path in logs.rglob("result.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), "sut": sut}))


def test_network_division_takes_only_network_sut_runs(logs, tmp_path):
    assert "the network division takes only --sut network runs" in problems(logs, "network")
    copy = copy_of(logs, tmp_path)
    _through_the_network(copy)
    selected = runs.find_runs(copy)[0]
    assert {s.system for s in selected} == {f"{detect_system().system_id}_Network"}
    network, closed = problems(copy, "network"), problems(copy, "closed")
    assert "lacks 'Network SUT' (MLPerf's network rule)" in network and "takes only" not in network
    assert "a run through the network SUT: stage it in the network division" in closed
    _through_the_network(copy, "network_ranges")
    assert "open division only" in problems(copy, "network") and "open division only" not in problems(copy, "open")
    machine = {key: "x" for key in system_json.REQUIRED_FIELDS}
    described = system_json.system_description({}, machine, "network", "org", False, network=True)
    assert described["is_network"] == "True" and set(system_json.NETWORK_FIELDS) <= set(described)


def test_short_runs_and_synthetic_data_are_named(logs):
    closed, opened = problems(logs, "closed"), problems(logs, "open")
    assert "short run" in opened and "short run" in closed
    assert "dataset fixture" in closed and "dataset fixture" not in opened
    assert "no TEST01" not in closed  # the audit made them


def test_compliance_runs_verified_against_other_runs_are_refused(logs, tmp_path):
    copy = copy_of(logs, tmp_path)
    newer = copy / "9999.12.31-23.59.59"  # a later `make run`: newer plain runs, the audit's tests still older
    shutil.copytree(run_folder(copy, "Offline", "PerformanceOnly").parents[4], newer)
    for folder in list(newer.glob("*/dlrm/*/default/TEST0[15]")):
        shutil.rmtree(folder)
    selected = runs.find_runs(copy)[0]
    assert all(s.runs["PerformanceOnly"].folder.is_relative_to(newer) for s in selected)
    assert all(not s.runs["TEST01"].folder.is_relative_to(newer) for s in selected)
    assert "TEST01 was verified against" in "\n".join(runs.problems(selected, "open"))


def test_other_labelled_and_singlestream_runs_are_left_out(logs, tmp_path):
    copy = copy_of(logs, tmp_path)
    plain = run_folder(copy, "Server", "PerformanceOnly")
    for label, scenario in (("sweep_1", "Server"), ("PerformanceOnly", "SingleStream")):
        folder = plain.parents[1] / scenario / "default" / label
        shutil.copytree(plain, folder)
        result = json.loads((folder / "result.json").read_text())
        (folder / "result.json").write_text(json.dumps({**result, "scenario": scenario} | (
            {"compliance_test": label} if label != "PerformanceOnly" else {})))
    selected, notes = runs.find_runs(copy)
    assert [s.runs["PerformanceOnly"].folder for s in selected if s.scenario == "Server"] == [plain]
    assert {s.scenario for s in selected} == {"Offline", "Server"}
    assert "left out 1 sweep (not a submission run) runs" in notes and any("SingleStream" in n for n in notes)


def test_system_file_template_and_fields(tmp_path):
    path = tmp_path / "facts.json"
    with pytest.raises(UserError, match="wrote the template"):
        system_json.read_user_file(path)
    template = json.loads(path.read_text())
    assert template["system_name"] == "" and template["status"] == "available"
    with pytest.raises(DataError, match="system_name is empty"):
        system_json.read_user_file(path)
    for fields, message in (({"status": "soon"}, "status is 'soon'"), ({"system_type": "edge"}, "system_type"),
                            ({"gpu": "x"}, "unknown field 'gpu'")):
        with pytest.raises(DataError, match=message):
            system_json.read_user_file(system_file(tmp_path, **fields))
    user = system_json.read_user_file(system_file(tmp_path, host_processor_model_name="Named CPU"))
    machine = system_json.machine_facts(detect_system(), tmp_path)
    described = system_json.system_description(user, machine, "open", "Org", triton=True)
    assert sorted(described) == sorted(V30_SYSTEM_FIELDS + ["is_network"]) and described["is_network"] == "False"
    assert described["host_processor_model_name"] == "Named CPU" and "Triton" in described["system_name"]
    assert described["host_processor_core_count"] >= 1 and described["host_memory_capacity"].endswith(("GB", "TB"))
    assert described["framework"].startswith("PyTorch ") and described["operating_system"]


def test_check_submission_names_file_and_value(staged, tmp_path, capsys):
    tree = tmp_path / "tree"
    shutil.copytree(staged.parents[1], tree)
    org = tree / "closed" / "Org"
    system = next((org / "results").iterdir()).name
    perf = org / "results" / system / "dlrm-99" / "Offline" / "performance" / "run_1"
    found = "\n".join(check_tree(tree))
    assert f"{perf / 'mlperf_log_detail.txt'}: short run: effective_min_duration_ms = 500, expected >= 600000" in found
    assert "effective_performance_sample_count = " in found and "seed" not in found
    assert "missing" not in found and "unexpected" not in found and "field" not in found
    (perf / "mlperf_log_summary.txt").unlink()
    accuracy = org / "results" / system / "dlrm-99" / "Server" / "accuracy" / "mlperf_log_accuracy.json"
    accuracy.write_text(" " * 20000)
    described = json.loads((org / "systems" / f"{system}.json").read_text())
    (org / "systems" / f"{system}.json").write_text(json.dumps({**described, "status": "x"}))
    found = "\n".join(check_tree(tree))
    assert f"{perf}: missing mlperf_log_summary.txt" in found
    assert f"{accuracy}: 20000 bytes, expected <= 10240 (not truncated)" in found
    assert f"{org / 'systems' / system}.json: status is 'x', expected one of available, preview, rdi" in found
    assert cli(["check-submission", "--input", str(tree)]) == 1
    assert "problems in" in capsys.readouterr().out


def test_official_checker_needs_its_path(tmp_path, capsys):
    assert cli(["run-submission-checker", "--input", str(tmp_path)]) == 2
    assert "git clone --depth 1 --branch v3.0 https://github.com/mlcommons/inference" in capsys.readouterr().err
    newer = tmp_path / "submission_checker.py"
    newer.write_text('MODEL_CONFIG = {"v4.1": {}}\n')
    assert cli(["run-submission-checker", "--checker", str(newer), "--input", str(tmp_path)]) == 2
    assert "knows no round v3.0" in capsys.readouterr().err
