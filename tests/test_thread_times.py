"""harness/thread_times.py: per-thread CPU and run-queue wait from /proc/self/task/*/schedstat."""

from __future__ import annotations

import mmap
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
    assert rows == [{"name": "batcher", "tid": 1, "cpu_s": 0.5, "run_queue_wait_s": 0.001, "timeslices": 2},
                    {"name": "native 2", "tid": 2, "cpu_s": 0.2, "run_queue_wait_s": 0.3, "timeslices": 3}]
    assert len(tt.thread_deltas({}, {i: (i, 0, 0) for i in range(40)}, {})) == tt.SHOWN


def test_stat_fields_give_faults_and_the_kernel_share() -> None:
    before = {5: (0, 0, 0, 100, 50, 10)}
    after = {5: (10**9, 0, 4, 400, 80, 40)}
    (row,) = tt.thread_deltas(before, after, {})
    assert row["minor_faults"] == 300 and row["kernel_share"] == 0.5


@needs_schedstat
def test_this_thread_reads_its_faults_and_ticks() -> None:
    reading = tt.read_schedstats()[threading.get_native_id()]
    assert len(reading) == 6 and all(v >= 0 for v in reading)
    with mmap.mmap(-1, 8 << 20) as pages:  # fresh anonymous pages (not the heap's): touching them faults them in
        for k in range(0, len(pages), 4096):
            pages[k] = 1
        assert tt.read_schedstats()[threading.get_native_id()][3] > reading[3]


def test_a_task_name_with_spaces_and_parentheses_is_parsed(tmp_path: Path) -> None:
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "schedstat").write_text("100 20 3\n")
    fields = ["S"] + ["0"] * 6 + ["77", "0", "0", "0", "12", "34"] + ["0"] * 30
    (tmp_path / "3" / "stat").write_text("3 (a (b) c) " + " ".join(fields) + "\n")
    assert tt.read_schedstats(tmp_path) == {3: (100, 20, 3, 77, 12, 34)}


def test_unreadable_entries_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "schedstat").write_text("100 20 3\n")
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "schedstat").write_text("garbage\n")
    (tmp_path / "9").mkdir()  # ended between the listing and the read
    assert tt.read_schedstats(tmp_path) == {7: (100, 20, 3)}
    assert tt.read_schedstats(tmp_path / "missing") == {}
