"""Per-batch durations of an engine's named phases, kept in bounded memory for result.json.

The count, the maximum and how many went over a threshold are exact; the median and p99 come from the most
recent `window` batches (a ring), so a long-lived engine (a Triton model instance, `dlrm-bench serve`) never
grows.
"""

from __future__ import annotations

import threading

import numpy as np

WINDOW = 1 << 16
"""Batches whose durations are kept for the median and p99."""
SLOW_MS = 5.0
"""A phase longer than this counts in `<phase>_over_5ms`."""


def ms_summary(name: str, ms: np.ndarray) -> dict[str, float]:
    """`<name>_median_ms`, `<name>_p99_ms`, `<name>_max_ms` of durations in milliseconds (non-empty)."""
    return {f"{name}_median_ms": float(np.median(ms)), f"{name}_p99_ms": float(np.percentile(ms, 99)),
            f"{name}_max_ms": float(ms.max())}


class PhaseTimes:
    """Durations (seconds) of `phases` per batch; `summary` reports in milliseconds and starts over."""

    def __init__(self, phases: tuple[str, ...], window: int = WINDOW) -> None:
        self.phases = phases
        self.lock = threading.Lock()
        self.ring = np.zeros((max(1, window), len(phases)), dtype=np.float64)
        self._reset()

    def _reset(self) -> None:
        self.count = 0
        self.max = np.zeros(len(self.phases))
        self.slow = np.zeros(len(self.phases), dtype=np.int64)

    def add(self, seconds: tuple[float, ...]) -> None:
        values = np.asarray(seconds, dtype=np.float64)
        with self.lock:
            self.ring[self.count % len(self.ring)] = values
            self.count += 1
            np.maximum(self.max, values, out=self.max)
            self.slow += values * 1e3 > SLOW_MS

    def summary(self) -> dict[str, float]:
        """`batches`, then per phase `_median_ms`, `_p99_ms` (recent window), `_max_ms` and `_over_5ms`; {}
        when nothing was added since the last call."""
        with self.lock:
            if self.count == 0:
                return {}
            ms = 1e3 * self.ring[:min(self.count, len(self.ring))]
            out: dict[str, float] = {"batches": float(self.count)}
            for column, phase in enumerate(self.phases):
                out.update(ms_summary(phase, ms[:, column]))
                out[f"{phase}_max_ms"] = float(1e3 * self.max[column])  # exact, beyond the window
                out[f"{phase}_over_5ms"] = float(self.slow[column])
            self._reset()
        return out
