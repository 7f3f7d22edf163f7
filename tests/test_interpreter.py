"""QuietInterpreter: the collector modes, the record of collections and the stall watchdog."""

from __future__ import annotations

import gc
import sys
import time

import pytest

from dlrm_bench import interpreter
from dlrm_bench.errors import UserError
from dlrm_bench.interpreter import QuietInterpreter


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_collections_while_entered_are_recorded_and_settings_restored() -> None:
    before = sys.getswitchinterval()
    quiet = QuietInterpreter(0.5)
    t0 = time.perf_counter()
    with quiet:
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        gc.collect(1)
    assert sys.getswitchinterval() == before
    assert gc.isenabled()
    assert quiet._on_gc not in gc.callbacks
    summary = quiet.summary(t0)
    assert summary["gc1_collections"] >= 1
    assert summary["gc_total_ms"] >= summary["gc_max_ms"] > 0
    assert summary["gc_longest"][0][0] >= 0  # seconds since t0


def test_the_timeline_holds_collections_and_stalls_in_time_order() -> None:
    quiet = QuietInterpreter(watch=True)
    t0 = time.perf_counter()
    with quiet:
        time.sleep(0.02)
        sum(range(20_000_000))  # a stall the watchdog sees
        gc.collect(0)
        time.sleep(0.02)
    timeline = quiet.timeline(t0)
    assert timeline.shape[1] == 3 and timeline.dtype == "float64"
    assert list(timeline[:, 0]) == sorted(timeline[:, 0]) and timeline[0, 0] >= 0
    kinds = set(timeline[:, 1])
    assert 0.0 in kinds and interpreter.STALL_KIND in kinds
    stalls = timeline[timeline[:, 1] == interpreter.STALL_KIND]
    collections = timeline[timeline[:, 1] == 0]
    assert stalls[:, 0].min() < collections[:, 0].max()  # the stall came before the explicit collection
    assert QuietInterpreter().timeline(0.0).shape == (0, 3)


def test_collector_off_disables_collection_and_restores_it() -> None:
    quiet = QuietInterpreter(collector="off")
    with quiet:
        assert not gc.isenabled()
        for _ in range(5000):
            Cycle()  # would trigger young collections with gc on
    assert gc.isenabled()
    assert quiet.summary(0.0)["gc0_collections"] == 0


def test_unknown_collector_mode_is_a_user_error() -> None:
    with pytest.raises(UserError, match="gc_during_test 'sometimes'"):
        QuietInterpreter(collector="sometimes")


def test_watchdog_sees_a_thread_that_holds_the_gil() -> None:
    quiet = QuietInterpreter(watch=True)
    t0 = time.perf_counter()
    with quiet:
        time.sleep(0.05)
        held = time.perf_counter()
        sum(range(20_000_000))  # C code that does not let the GIL go
        held = time.perf_counter() - held
        time.sleep(0.02)
    assert held > 0.03, "the GIL-holding call was too fast on this machine to be seen"
    summary = quiet.summary(t0)
    assert summary["stalls"] >= 1
    assert summary["stall_max_ms"] > 0.5 * 1e3 * held
    assert quiet._watcher is None
