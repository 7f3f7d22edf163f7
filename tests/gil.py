"""A call that keeps the GIL, for the tests of the stall watchdog and its traces."""

from __future__ import annotations

import time


def hold_the_gil() -> float:
    """Seconds spent in C code that keeps the GIL (sum over a range never lets it go)."""
    started = time.perf_counter()
    sum(range(20_000_000))
    return time.perf_counter() - started
