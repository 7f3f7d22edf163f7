"""PhaseTimes: exact counts and maxima, window percentiles, reset on summary, bounded memory."""

from __future__ import annotations

import pytest

from dlrm_bench.engines.phase_times import PhaseTimes


def test_summary_in_milliseconds_then_starts_over() -> None:
    times = PhaseTimes(("wait", "launch"), window=4)
    assert times.summary() == {}
    for k in range(10):  # the ring keeps the last 4: k = 6..9
        times.add((0.001 * k, 0.006 if k == 2 else 0.0001))
    s = times.summary()
    assert s["batches"] == 10
    assert s["wait_max_ms"] == pytest.approx(9.0) and s["launch_max_ms"] == pytest.approx(6.0)
    assert s["wait_over_5ms"] == 4 and s["launch_over_5ms"] == 1  # exact over all 10
    assert s["wait_median_ms"] == pytest.approx(7.5)  # of 6, 7, 8, 9
    assert times.ring.shape == (4, 2)
    assert times.summary() == {}
