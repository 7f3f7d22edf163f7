"""Per-batch timestamps of the SUT, to see where a sample's wait goes when LoadGen's tail latency jumps.

Every batch is stamped (time.perf_counter) when the batcher took its samples from the queue (`taken`; it waits
for a free in-flight slot before taking), when the engine call returned (`sent`: for a synchronous engine such as
cpu or reference that is after computing; after the first batch of an Offline query, also the wait for a slot),
when the engine's future resolved (`engine_done`) and
when its results were handed back to LoadGen (`completed`). A run writes them as `sut_batches.npy`, float64
[batches, 6]: the four stamps in seconds since the test started, then samples and pairs; result.json gets the
phase summary (`summarize`). `sut_batch_cpu.npy` (float64 [batches, 2], the same order) holds the thread CPU
seconds of the dispatch and of the hand-back (CPU_PHASES). Offline takes the whole query at once, so all its
batches share one `taken` and `dispatch` there is mostly the wait behind earlier batches; the phases speak of
Server's batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrm_bench.atomic import save_npy
from dlrm_bench.engines.phase_times import ms_summary

STAMPS = ("taken", "sent", "engine_done", "completed")
CPU_PHASES = ("dispatch", "hand_back")
"""Thread CPU seconds (time.thread_time) of the batcher in the engine call and of the completion thread in the
hand-back: against the phase's wall time, a thread that was blocked or not scheduled shows as CPU << wall."""
CPU_FILE = "sut_batch_cpu.npy"
PHASES = {"dispatch": ("taken", "sent"), "engine": ("sent", "engine_done"),
          "hand_back": ("engine_done", "completed"), "total": ("taken", "completed")}
BATCHES_FILE = "sut_batches.npy"
BATCH_COLUMNS = len(STAMPS) + 2
"""BATCHES_FILE's columns: the stamps, samples, pairs."""


def as_array(rows: list[tuple[float, ...]], t0: float) -> np.ndarray:
    """[(taken, sent, engine_done, completed, samples, pairs[, dispatch_cpu, hand_back_cpu])] -> float64
    [batches, 6 or 8], stamps relative to t0, in the order the batches were taken."""
    width = len(rows[0]) if rows else BATCH_COLUMNS
    array = np.array(sorted(rows), dtype=np.float64).reshape(-1, width)
    array[:, :len(STAMPS)] -= t0
    return array


def save(out: Path, rows: list[tuple[float, ...]], t0: float) -> np.ndarray:
    """Write BATCHES_FILE (and CPU_FILE when the rows carry CPU_PHASES); returns as_array's array."""
    array = as_array(rows, t0)
    if array.shape[1] > BATCH_COLUMNS:
        save_npy(Path(out) / CPU_FILE, np.ascontiguousarray(array[:, BATCH_COLUMNS:]))
    save_npy(Path(out) / BATCHES_FILE, np.ascontiguousarray(array[:, :BATCH_COLUMNS]))
    return array


def cpu_summary(batches: np.ndarray, cpu: np.ndarray) -> dict[str, float]:
    """Per CPU phase: median / p99 / max CPU ms, and over the batches whose phase took more than 5 ms of wall
    time, their count and the median share of that wall time the thread spent on a CPU."""
    measured = np.all(np.isfinite(cpu), axis=1)
    batches, cpu = batches[measured], cpu[measured]
    if len(cpu) == 0:
        return {}
    column = {name: k for k, name in enumerate(STAMPS)}
    out: dict[str, float] = {}
    for k, phase in enumerate(CPU_PHASES):
        start, end = PHASES[phase]
        wall = batches[:, column[end]] - batches[:, column[start]]
        used = cpu[:, k]
        out.update(ms_summary(f"{phase}_cpu", 1e3 * used))
        slow = wall > 0.005
        out[f"{phase}_over_5ms"] = float(np.count_nonzero(slow))
        out[f"{phase}_over_5ms_cpu_share"] = float(np.median(used[slow] / wall[slow])) if slow.any() else 0.0
    return out


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
    if array.shape[1] > BATCH_COLUMNS:
        out.update(cpu_summary(array[:, :BATCH_COLUMNS], array[:, BATCH_COLUMNS:]))
    return out
