"""Interpreter settings for latency-bound work in a Python process with several busy threads, and a record of
the pauses the interpreter itself causes (garbage collections, threads that cannot get the GIL)."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np

from dlrm_bench.errors import UserError

DEFAULT_SWITCH_INTERVAL_MS = 0.5
COLLECTOR_MODES = ("frozen", "off")
"""frozen: gc.freeze() the objects that exist when a test starts, collections stay on for the new ones.
off: also gc.disable() for the test (cycles made during it are collected when it ends)."""
WATCH_INTERVAL_S = 0.002
"""How often the stall watchdog wakes; it records a wake-up later than `WATCH_LATE_S` past this."""
WATCH_LATE_S = 0.004
STALL_KIND = -1.0
"""`timeline`'s kind of a watchdog stall (collections are 0, 1, 2: their generation)."""
KEPT = 100_000
"""Collections and stalls remembered (the most recent), so a long-lived model instance never grows."""


class QuietInterpreter:
    """While entered: the objects that exist are frozen out of the garbage collector's reach (gc.freeze: no long
    collection pauses over the engine's and libraries' objects; `collector="off"` disables collection outright)
    and the GIL switch interval is short, so a thread woken by a finished batch is not kept waiting up to
    Python's default 5 ms by a busy one. Used by the harness for the duration of a LoadGen test and by the Triton
    backend for the life of its model instance.

    `pauses` records every garbage collection while entered (the last KEPT): (perf_counter start, generation,
    seconds).
    With `watch=True` a daemon thread sleeps WATCH_INTERVAL_S at a time and records in `stalls` each wake-up
    that came more than WATCH_LATE_S late ((perf_counter when it should have woken, seconds late)): time the
    interpreter gave no thread of this process (a collection, or a thread holding the GIL in C code)."""

    def __init__(self, switch_interval_ms: float = DEFAULT_SWITCH_INTERVAL_MS, collector: str = "frozen",
                 watch: bool = False) -> None:
        if collector not in COLLECTOR_MODES:
            raise UserError(f"gc_during_test '{collector}': choose from {', '.join(COLLECTOR_MODES)}")
        self.switch_interval_s = max(float(switch_interval_ms), 0.01) / 1000.0
        self.collector = collector
        self.saved = sys.getswitchinterval()
        self.pauses: deque[tuple[float, int, float]] = deque(maxlen=KEPT)
        self.stalls: deque[tuple[float, float]] = deque(maxlen=KEPT)
        self._gc_started = 0.0
        self._watch = watch
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
        else:
            self.pauses.append((self._gc_started, int(info.get("generation", -1)), now - self._gc_started))

    def _watch_loop(self) -> None:
        due = time.perf_counter() + WATCH_INTERVAL_S
        while not self._stop.wait(max(0.0, due - time.perf_counter())):
            late = time.perf_counter() - due
            if late > WATCH_LATE_S:
                self.stalls.append((due, late))
            due = max(due + WATCH_INTERVAL_S, time.perf_counter())

    def __enter__(self) -> "QuietInterpreter":
        gc.collect()
        gc.freeze()
        if self.collector == "off":
            gc.disable()
        gc.callbacks.append(self._on_gc)
        self.saved = sys.getswitchinterval()
        sys.setswitchinterval(self.switch_interval_s)
        if self._watch:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch_loop, name="stall-watch", daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._watcher is not None:
            self._stop.set()
            self._watcher.join()
            self._watcher = None
        sys.setswitchinterval(self.saved)
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self.collector == "off":
            gc.enable()
        gc.unfreeze()

    def timeline(self, t0: float) -> np.ndarray:
        """Every recorded pause as float64 [pauses, 3], in time order: start in seconds since t0, what it was
        (0, 1, 2: a collection of that generation; STALL_KIND: a late watchdog wake-up, from when it was due),
        seconds."""
        rows = [(t - t0, float(g), s) for t, g, s in self.pauses]
        rows += [(t - t0, STALL_KIND, s) for t, s in self.stalls]
        return np.array(sorted(rows), dtype=np.float64).reshape(-1, 3)

    def summary(self, t0: float) -> dict[str, Any]:
        """Collections per generation, their longest and total milliseconds, the watchdog's stalls, and the five
        longest of each with their start in seconds since t0."""
        out: dict[str, Any] = {"collector": self.collector}
        for generation in (0, 1, 2):
            out[f"gc{generation}_collections"] = sum(1 for _, g, _ in self.pauses if g == generation)
        out["gc_max_ms"] = 1e3 * max((s for _, _, s in self.pauses), default=0.0)
        out["gc_total_ms"] = 1e3 * sum(s for _, _, s in self.pauses)
        out["gc_longest"] = [[round(t - t0, 4), g, round(1e3 * s, 3)]
                             for t, g, s in sorted(self.pauses, key=lambda p: -p[2])[:5]]
        if self._watch:
            out["stalls"] = len(self.stalls)
            out["stall_max_ms"] = 1e3 * max((s for _, s in self.stalls), default=0.0)
            out["stall_total_ms"] = 1e3 * sum(s for _, s in self.stalls)
            out["stalls_longest"] = [[round(t - t0, 4), round(1e3 * s, 3)]
                                     for t, s in sorted(self.stalls, key=lambda p: -p[1])[:5]]
        return out
