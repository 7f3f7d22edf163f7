"""Per-batch timestamps of the SUT, to see where a sample's wait goes when LoadGen's tail latency jumps.

Every batch is stamped (time.perf_counter) when the batcher took its samples from the queue (`taken`; it waits
for a free in-flight slot before taking), when the engine call returned (`sent`: for a synchronous engine such as
cpu or reference that is after computing; after the first batch of an Offline query, also the wait for a slot),
when the engine's future resolved (`engine_done`) and
when its results were handed back to LoadGen (`completed`). A run writes them as `sut_batches.npy`, float64
[batches, 6]: the four stamps in seconds since the test started, then samples and pairs; result.json gets the
phase summary (`summarize`). Offline takes the whole query at once, so all its
batches share one `taken` and `dispatch` there is mostly the wait behind earlier batches; the phases speak of
Server's batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrm_bench.atomic import save_npy

STAMPS = ("taken", "sent", "engine_done", "completed")
PHASES = {"dispatch": ("taken", "sent"), "engine": ("sent", "engine_done"),
          "hand_back": ("engine_done", "completed"), "total": ("taken", "completed")}
BATCHES_FILE = "sut_batches.npy"
BATCH_COLUMNS = len(STAMPS) + 2
"""BATCHES_FILE's columns: the stamps, samples, pairs."""


def ms_summary(name: str, ms: np.ndarray) -> dict[str, float]:
    """`<name>_median_ms`, `<name>_p99_ms`, `<name>_max_ms` of durations in milliseconds (non-empty)."""
    return {f"{name}_median_ms": float(np.median(ms)), f"{name}_p99_ms": float(np.percentile(ms, 99)),
            f"{name}_max_ms": float(ms.max())}


def as_array(rows: list[tuple[float, ...]], t0: float) -> np.ndarray:
    """[(taken, sent, engine_done, completed, samples, pairs)] -> float64 [batches, 6], stamps relative to t0, in
    the order the batches were taken."""
    array = np.array(sorted(rows), dtype=np.float64).reshape(-1, BATCH_COLUMNS)
    array[:, :len(STAMPS)] -= t0
    return array


def save(out: Path, rows: list[tuple[float, ...]], t0: float) -> np.ndarray:
    """Write BATCHES_FILE; returns as_array's array."""
    array = as_array(rows, t0)
    save_npy(Path(out) / BATCHES_FILE, array)
    return array


def summarize(array: np.ndarray) -> dict[str, float]:
    """Median / p99 / max milliseconds of each phase, and the longest time between two consecutive completions
    (a stall of the whole pipeline shows there). Empty for a run without batches."""
    if array.size == 0:
        return {}
    out: dict[str, float] = {}
    column = {name: k for k, name in enumerate(STAMPS)}
    for phase, (start, end) in PHASES.items():
        out.update(ms_summary(phase, 1e3 * (array[:, column[end]] - array[:, column[start]])))
    completions = np.sort(array[:, column["completed"]])
    out["longest_completion_gap_ms"] = float(1e3 * np.diff(completions).max()) if len(completions) > 1 else 0.0
    return out
