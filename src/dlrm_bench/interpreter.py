"""Interpreter settings for latency-bound work in a Python process with several busy threads."""

from __future__ import annotations

import gc
import sys

DEFAULT_SWITCH_INTERVAL_MS = 0.5


class QuietInterpreter:
    """While entered: the objects that exist are frozen out of the garbage collector's reach (gc.freeze: no long
    collection pauses over the engine's and libraries' objects) and the GIL switch interval is short, so a thread
    woken by a finished batch is not kept waiting up to Python's default 5 ms by a busy one. Used by the harness
    for the duration of a LoadGen test and by the Triton backend for the life of its model instance."""

    def __init__(self, switch_interval_ms: float = DEFAULT_SWITCH_INTERVAL_MS) -> None:
        self.switch_interval_s = max(float(switch_interval_ms), 0.01) / 1000.0
        self.saved = sys.getswitchinterval()

    def __enter__(self) -> "QuietInterpreter":
        gc.collect()
        gc.freeze()
        self.saved = sys.getswitchinterval()
        sys.setswitchinterval(self.switch_interval_s)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setswitchinterval(self.saved)
        gc.unfreeze()
