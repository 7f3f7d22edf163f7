"""Per thread of this process, over a test: seconds on a CPU and seconds runnable but waiting for one.

Linux keeps both per thread in /proc/self/task/<tid>/schedstat (CPU ns, run-queue wait ns, timeslices). Beside the
SUT's per-batch CPU time (batch_stamps.CPU_PHASES) they say why a slow batch's thread was off the CPUs: a long
run-queue wait means the scheduler kept it waiting for a CPU; a short one means it was blocked (a lock, the GIL, a
device call). result.json's `host_cpu.threads` lists the threads alive at the end of the test, Python threads by
their name (batcher, complete_0, cuda-complete_0, stall-watch, ...), others as `native <tid>`.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dlrm_bench.harness.cpu_affinity import TASKS

SHOWN = 16
"""Threads listed at most (the most CPU first)."""

Reading = dict[int, tuple[int, int, int]]
"""tid -> (ns on a CPU, ns waiting on a run queue, timeslices)."""


def read_schedstats(tasks: Path = TASKS) -> Reading:
    """Every thread's schedstat under `tasks` ({} where the kernel keeps none)."""
    out: Reading = {}
    try:
        entries = list(tasks.iterdir())
    except OSError:
        return out
    for entry in entries:
        try:
            fields = (entry / "schedstat").read_text(encoding="ascii").split()
            out[int(entry.name)] = (int(fields[0]), int(fields[1]), int(fields[2]))
        except (OSError, ValueError, IndexError):
            continue  # the thread ended, or no schedstat
    return out


def python_thread_names() -> dict[int, str]:
    """Native thread id -> Python thread name, for the Python threads alive now."""
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def thread_deltas(before: Reading, after: Reading, names: dict[int, str], shown: int = SHOWN) -> list[dict]:
    """Per thread alive at `after` (new ones count from zero): name, cpu_s, run_queue_wait_s, timeslices; the
    `shown` with the most CPU time."""
    rows = []
    for tid, (cpu, wait, slices) in after.items():
        cpu0, wait0, slices0 = before.get(tid, (0, 0, 0))
        rows.append({"name": names.get(tid, f"native {tid}"), "cpu_s": (cpu - cpu0) / 1e9,
                     "run_queue_wait_s": (wait - wait0) / 1e9, "timeslices": slices - slices0})
    return sorted(rows, key=lambda r: -r["cpu_s"])[:shown]
