"""bench_server_model.py: the modelled GPU's timing, padding and stalls, and one short run through LoadGen."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_server_model as bsm  # noqa: E402
from dlrm_bench.errors import UserError  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402
from tests.bench_args import refusal  # noqa: E402


def test_the_fitted_line_reproduces_both_measured_points() -> None:
    points = [(1048576, 759271.0), (524288, 747346.0)]
    t = bsm.fit_batch_time(points, 270.0)
    for pairs, sps in points:
        assert t(pairs) == pytest.approx(pairs / (sps * 270.0), rel=1e-12)
    assert 0 < t.fixed_s < 1e-3 and t.pairs_per_s > 2e8
    with pytest.raises(UserError, match="two different batch sizes"):
        bsm.fit_batch_time([(1000, 5.0), (1000, 6.0)], 270.0)
    with pytest.raises(UserError, match="larger batches must take longer"):
        bsm.fit_batch_time([(1000, 5.0), (2000, 20.0)], 270.0)  # twice the pairs in half the time


def test_stalls_slow_or_freeze_the_calls_inside_their_windows() -> None:
    freeze = bsm.HostStalls(bsm.StallProfile("hole", period_s=1.0, window_s=0.5), 100.0, 10.0, seed=3)
    begin, end = freeze.windows[0]
    assert 0.75 <= begin <= 1.25 and end == pytest.approx(begin + 0.5)
    assert freeze.delay(100.0 + begin - 0.01, 0.001) == 0.0
    assert freeze.delay(100.0 + begin + 0.1, 0.001) == pytest.approx(0.4)
    assert freeze.delay(100.0 + end + 0.01, 0.001) == 0.0
    slow = bsm.HostStalls(bsm.StallProfile("slow", period_s=1.0, window_s=0.03, call_s=0.01), 0.0, 10.0, seed=3)
    assert slow.delay(slow.windows[2][0] + 0.02, 0.001) == 0.01
    times = bsm.HostStalls(bsm.StallProfile("x", period_s=1.0, window_s=0.03, call_factor=8.0), 0.0, 10.0, seed=3)
    assert times.delay(times.windows[1][0] + 0.001, 0.002) == pytest.approx(0.014)
    assert times.delay(times.windows[1][1] + 0.001, 0.002) == 0.0
    assert bsm.HostStalls(bsm.STALLS["none"], 0.0, 10.0, seed=3).delay(5.0, 0.001) == 0.0


def test_batches_are_padded_to_buckets_and_queue_on_the_gpu() -> None:
    stalls = bsm.HostStalls(bsm.STALLS["none"], time.perf_counter(), 10.0, seed=1)
    gpu = bsm.ModelledGpu(bsm.BatchTime(0.0, 1000.0), [4, 8, 12, 16], 0.0, stalls)  # 1 ms per pair
    try:
        assert [gpu.padded(p) for p in (1, 5, 16, 17, 35)] == [4, 8, 16, 20, 36]
        t0 = time.perf_counter()
        first = gpu.predict_ranges_async(np.array([0]), np.array([40]))  # 40 ms
        second = gpu.predict_ranges_async(np.array([40]), np.array([41]))  # padded to 4: 4 ms after the first
        assert second.result(timeout=5).shape == (1,)
        assert first.done() and time.perf_counter() - t0 >= 0.043
        assert (gpu.real_pairs, gpu.computed_pairs) == (41, 44)
    finally:
        gpu.close()


def test_batch_sizes_are_scaled_to_whole_tiles() -> None:
    s = bsm.scaled(Settings(batch_size=524288, gpu_batch_size=1048576, server_backlog_batch_size=0), 0.1)
    assert (s.batch_size, s.gpu_batch_size, s.server_backlog_batch_size) == (52480, 104960, 0)


def test_a_short_run_writes_its_runs_and_summary(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_server_model.py", "--qps", "200000", "--duration", "1", "--repeats",
                                      "1", "--stalls", "none", "--scale", "0.01",
                                      "--compare", "server_backlog_batch_size=1048576", "--out", str(tmp_path)])
    assert bsm.main() == 0
    report = json.loads((tmp_path / "bench_server_model.json").read_text())
    assert [r["variant"] for r in report["runs"]] == ["shipped", "server_backlog_batch_size=1048576"]
    for run in report["runs"]:
        assert run["batches"] > 0 and run["p99_ms"] > 0 and run["samples_per_second_full_scale"] > 0
    assert [s["runs"] for s in report["summary"]] == [1, 1]
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("argv, expected", [
    (["--stalls", "often"], "unknown stall profile often"),
    (["--compare", "batch_size=0"], "--compare: setting 'batch_size' is 0"),
    (["--offline-points", "1048576:759271"], "two positive PAIRS:SAMPLES_PER_S points"),
    (["--offline-points", "1:1,2:2,3:3"], "two positive PAIRS:SAMPLES_PER_S points"),
    (["--scale", "2"], "0 < --scale <= 1"),
])
def test_bad_arguments_are_refused_by_name(argv: list[str], expected: str, monkeypatch, capsys) -> None:
    assert expected in refusal(bsm.main, ["bench_server_model.py", *argv], monkeypatch, capsys)
