"""`dlrm-bench find-peak`: the search itself, and a real search through LoadGen whose result a later run uses."""

from __future__ import annotations

import json

import pytest

from dlrm_bench.cli import main as cli
from dlrm_bench.harness.find_peak import PeakSearch
from dlrm_bench.system import detect_system
from dlrm_bench.user_settings import entry_for, user_settings_path
from tests.conftest import save_random_model, write_preprocessed_dataset


def search_against(peak: float, **kwargs) -> PeakSearch:
    """Run the search against a machine on which exactly the targets <= peak are VALID."""
    search = PeakSearch(**kwargs)
    while (target := search.next()) is not None:
        search.record(target, target <= peak)
    return search


@pytest.mark.parametrize("start", [10.0, 1000.0, 9000.0, 50000.0])
def test_the_search_brackets_then_narrows_to_the_tolerance(start: float) -> None:
    search = search_against(9000.0, start=start, tolerance=0.02, max_steps=40)
    assert search.best <= 9000.0 and search.lowest_invalid > 9000.0
    assert search.lowest_invalid <= search.best * 1.02
    assert len(search.steps) < 40


def test_the_search_stops_at_max_steps_and_reports_no_valid_target() -> None:
    search = search_against(0.5, start=1000.0, max_steps=5)
    assert len(search.steps) == 5 and search.best is None


def test_find_peak_writes_what_a_later_run_uses(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path / "scratch"))
    data = write_preprocessed_dataset(tmp_path / "data", test_rows=2000, num_days=1, rows_per_day=300)
    model = save_random_model(tmp_path / "model.pt")
    flags = ["--dataset-dir", str(data), "--model", str(model), "--engine", "cpu", "--log_dir",
             str(tmp_path / "logs"), "--min_duration", "0.5", "--min_query_count", "500"]
    # samples of at most 20 pairs: 100/s is a target an idle machine holds; 3 steps of 500 queries (LoadGen's
    # early stopping needs 459 for a VALID run), so that one step lost to a busy machine (the suite's other worker)
    # still leaves a VALID one
    assert cli(["find-peak", "--scenario", "Server", "--start", "100", "--max-steps", "3", "--margin", "0.1",
                *flags]) == 0
    out = capsys.readouterr().out
    path = user_settings_path(detect_system().system_id)
    entry = json.loads(path.read_text())["Server"]["default"]
    steps = entry["found"]["steps"]
    best = max(t for t, ok in steps if ok)
    assert entry["engine"] == "cpu" and entry["settings"]["server_target_qps"] == round(best * 0.9, 1)
    assert f"written to {path}" in out and len(steps) == 3 and steps[0][0] == 100.0
    assert entry_for(path, "Server", "default", "reference") is None  # found with another engine: not applied
    assert cli(["run", "--scenarios", "Server", "--test_mode", "PerformanceOnly", *flags]) == 0
    run = json.loads(next((tmp_path / "logs" / "latest").rglob("result.json")).read_text())
    assert run["settings"]["server_target_qps"] == entry["settings"]["server_target_qps"]
    assert str(path) in run["settings_source"]
    assert cli(["run", "--scenarios", "Server", "--test_mode", "PerformanceOnly", "--no-user-settings", *flags]) == 0
    run = json.loads(next((tmp_path / "logs" / "latest").rglob("result.json")).read_text())
    assert run["settings"]["server_target_qps"] != entry["settings"]["server_target_qps"]
