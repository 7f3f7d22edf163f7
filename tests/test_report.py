"""`dlrm-bench report` and the per-run plots, on log folders written by real `dlrm-bench run`s (LoadGen,
reference engine)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from dlrm_bench import plots
from dlrm_bench.harness import batch_stamps, runner
from dlrm_bench.cli import main as cli
from dlrm_bench.loadgen_logs import read_detail_log
from tests.conftest import save_random_model, write_preprocessed_dataset

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """Two `run` invocations into one log root: Offline (performance + accuracy), then Server performance."""
    root = tmp_path_factory.mktemp("report")
    data = write_preprocessed_dataset(root / "data", test_rows=1500, num_days=1, rows_per_day=200, max_sample=30)
    ckpt = save_random_model(root / "model.pt")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLPERF_SCRATCH_PATH", str(root / "scratch"))
    base = ["run", "--dataset-dir", str(data), "--model", str(ckpt), "--engine", "reference",
            "--log_dir", str(root / "logs"), "--min_duration", "0.5"]
    try:
        assert cli(base + ["--scenarios", "Offline", "--offline_expected_qps", "300"]) == 0
        assert cli(base + ["--scenarios", "Server", "--test_mode", "PerformanceOnly", "--server_target_qps", "20",
                           "--min_query_count", "20"]) == 0
    finally:
        mp.undo()
    return root / "logs"


def run_folders(logs: Path) -> dict[tuple[str, str], Path]:
    return {(p.parts[-4], p.parts[-2]): p.parent for p in logs.glob("2*/*/dlrm/*/*/*/result.json")}


def test_every_run_folder_gets_its_plots(logs):
    folders = run_folders(logs)
    assert set(folders) == {("Offline", "PerformanceOnly"), ("Offline", "AccuracyOnly"), ("Server", "PerformanceOnly")}
    for key, folder in folders.items():
        assert (folder / "throughput.png").read_bytes()[:8] == PNG
        assert (folder / "latency.png").exists() == (key == ("Server", "PerformanceOnly"))
        timeline = np.load(folder / plots.TIMELINE_FILE)
        result = json.loads((folder / "result.json").read_text())
        assert timeline.shape[1] == 3 and np.all(np.diff(timeline[:, 0]) >= 0) and timeline[0, 0] > 0
        assert timeline[:, 1].sum() == result["samples_processed"] and timeline[:, 2].sum() == result["pairs_processed"]
        assert timeline[-1, 0] <= result["wall_seconds"]
    assert (folders[("Server", "PerformanceOnly")] / "latency.png").read_bytes()[:8] == PNG


def test_every_batch_is_stamped_in_order_and_summarized(logs):
    for folder in run_folders(logs).values():
        stamps = np.load(folder / batch_stamps.BATCHES_FILE)
        result = json.loads((folder / "result.json").read_text())
        assert stamps.shape[1] == len(batch_stamps.STAMPS) + 2
        assert stamps[:, 4].sum() == result["samples_processed"] and stamps[:, 5].sum() == result["pairs_processed"]
        assert np.all(stamps[:, 0] > 0) and np.all(np.diff(stamps[:, :4], axis=1) >= 0)  # taken <= sent <= ...
        phases = result["sut_batch_phases"]
        assert phases["total_max_ms"] >= phases["total_p99_ms"] >= phases["total_median_ms"] > 0
        assert phases["longest_completion_gap_ms"] <= 1e3 * result["wall_seconds"]
        pauses = np.load(folder / runner.PAUSES_FILE)
        assert pauses.shape[1] == 3 and np.all(np.diff(pauses[:, 0]) >= 0)
        pauses_result = result["interpreter_pauses"]
        collections = sum(pauses_result[f"gc{g}_collections"] for g in (0, 1, 2))
        assert np.count_nonzero(pauses[:, 1] >= 0) == collections
        assert np.count_nonzero(pauses[:, 1] < 0) == pauses_result.get("stalls", 0)


def test_batch_phase_summary_finds_a_stall() -> None:
    rows = [(t, t + 0.001, t + 0.003, t + 0.004, 10, 2700) for t in np.arange(0.0, 1.0, 0.01)]
    rows.append((2.0, 2.0005, 2.0025, 2.0035, 10, 2700))  # nothing completes for ~1 s before this one
    array = batch_stamps.as_array(rows, -1.0)
    assert array[0, 0] == 1.0 and array.shape == (101, 6)
    summary = batch_stamps.summarize(array)
    assert summary["dispatch_median_ms"] == pytest.approx(1.0)
    assert summary["engine_max_ms"] == pytest.approx(2.0)
    assert summary["total_median_ms"] == pytest.approx(4.0)
    assert summary["longest_completion_gap_ms"] == pytest.approx(1e3 * (2.0035 - 0.994), rel=1e-6)
    assert batch_stamps.summarize(batch_stamps.as_array([], 0.0)) == {}


def test_throughput_series_and_percentiles(logs):
    folder = run_folders(logs)[("Server", "PerformanceOnly")]
    timeline = np.load(folder / plots.TIMELINE_FILE)
    centres, sps, pps = plots.throughput_series(timeline)
    width = centres[1] - centres[0] if len(centres) > 1 else 2 * centres[0]
    assert sps.sum() * width == pytest.approx(timeline[:, 1].sum())
    assert pps.sum() * width == pytest.approx(timeline[:, 2].sum())
    points = dict(plots.latency_percentiles(read_detail_log(folder / "mlperf_log_detail.txt")))
    assert list(points) == ["min", "p50", "p90", "p95", "p97", "p99", "p99.9", "max"]
    result = json.loads((folder / "result.json").read_text())
    assert points["p99"] == pytest.approx(result["latency_p99_ms"])
    assert points["min"] <= points["p50"] <= points["p99"] <= points["max"]


def table_rows(out: str) -> list[list[str]]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---"))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start + 1:] if line.strip()]


def test_report_of_the_newest_folder(logs, capsys):
    assert cli(["report", str(logs / "latest")]) == 0
    out = capsys.readouterr().out
    assert "1 runs under" in out
    header = out.splitlines()[1]
    assert header.split()[:5] == ["scenario", "config_ver", "mode", "throughput", "pairs/s"]
    assert all(word in header for word in ("latency", "AUC", "result"))
    rows = table_rows(out)
    assert len(rows) == 1 and rows[0][:3] == ["Server", "default", "Performance"]
    result = json.loads(next((logs / "latest").rglob("result.json")).read_text())
    assert rows[0][3] == f"{result['samples_per_second']:,.1f} scheduled samples/s"
    assert rows[0][5] == f"p99 {result['latency_p99_ms']:.2f} ms"
    assert rows[0][-1].startswith("VALID") or rows[0][-1].startswith("INVALID")


def test_report_of_all_runs_counts_each_once(logs, capsys, monkeypatch):
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(logs.parent))  # its logs/ is this log root
    assert cli(["report", str(logs)]) == 0  # holds `latest` too: not followed
    rows = table_rows(capsys.readouterr().out)
    assert len(rows) == 3 and len({r[0] for r in rows}) == 2  # a leading "run" column, two timestamps
    accuracy = next(r for r in rows if r[3] == "Accuracy")
    result = json.loads(next(logs.glob("2*/*/dlrm/Offline/default/AccuracyOnly/result.json")).read_text())
    assert accuracy[7] == f"{100 * result['auc']:.4f}" and accuracy[-1] == "PASS"
    assert cli(["report"]) == 0  # default: $MLPERF_SCRATCH_PATH/logs/latest
    capsys.readouterr()


def test_report_draws_missing_plots_and_skips_bad_results(logs, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(logs / "latest", copy, symlinks=True)
    folder = next(copy.rglob("result.json")).parent
    for png in folder.glob("*.png"):
        png.unlink()
    assert cli(["report", str(copy), "--no-plots"]) == 0
    assert not list(folder.glob("*.png"))
    assert cli(["report", str(copy)]) == 0
    assert (folder / "throughput.png").exists() and (folder / "latency.png").exists()
    broken = copy / "broken" / "x"
    broken.mkdir(parents=True)
    (broken / "result.json").write_text("{not json")
    capsys.readouterr()
    assert cli(["report", str(copy)]) == 0
    assert "skipping" in capsys.readouterr().out


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli(["report", str(tmp_path / "nowhere")]) == 2
    assert "log folder not found" in capsys.readouterr().err
    assert cli(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no runs here" in err and "Traceback" not in err


def test_a_failing_plot_does_not_fail_the_run(tmp_path, capsys):
    np.save(tmp_path / plots.TIMELINE_FILE, np.zeros((3, 2)))  # wrong shape
    assert plots.write_run_plots(tmp_path, {"scenario": "Offline", "test_mode": "PerformanceOnly"}) == []
    assert "plot_throughput skipped" in capsys.readouterr().out
