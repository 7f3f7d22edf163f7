"""harness/thread_times.py: per-thread CPU and run-queue wait from /proc/self/task/*/schedstat."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dlrm_bench.harness import thread_times as tt

needs_schedstat = pytest.mark.skipif(not tt.read_schedstats(), reason="no /proc/self/task/*/schedstat here")


@needs_schedstat
def test_a_busy_thread_shows_its_cpu_time_under_its_name() -> None:
    before = tt.read_schedstats()
    go, done = threading.Event(), threading.Event()

    def spin() -> None:
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        go.set()
        done.wait(5)

    worker = threading.Thread(target=spin, name="spinner")
    worker.start()
    try:
        assert go.wait(5)
        rows = tt.thread_deltas(before, tt.read_schedstats(), tt.python_thread_names())
    finally:
        done.set()
        worker.join()
    spinner = next(r for r in rows if r["name"] == "spinner")
    assert spinner["cpu_s"] >= 0.04 and spinner["run_queue_wait_s"] >= 0 and spinner["timeslices"] >= 1
    assert rows == sorted(rows, key=lambda r: -r["cpu_s"])


def test_deltas_count_new_threads_from_zero_and_name_the_others() -> None:
    before = {1: (1_000_000_000, 5_000_000, 10)}
    after = {1: (1_500_000_000, 6_000_000, 12), 2: (200_000_000, 300_000_000, 3)}
    rows = tt.thread_deltas(before, after, {1: "batcher"})
    assert rows == [{"name": "batcher", "cpu_s": 0.5, "run_queue_wait_s": 0.001, "timeslices": 2},
                    {"name": "native 2", "cpu_s": 0.2, "run_queue_wait_s": 0.3, "timeslices": 3}]
    assert len(tt.thread_deltas({}, {i: (i, 0, 0) for i in range(40)}, {})) == tt.SHOWN


def test_unreadable_entries_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "schedstat").write_text("100 20 3\n")
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "schedstat").write_text("garbage\n")
    (tmp_path / "9").mkdir()  # ended between the listing and the read
    assert tt.read_schedstats(tmp_path) == {7: (100, 20, 3)}
    assert tt.read_schedstats(tmp_path / "missing") == {}
