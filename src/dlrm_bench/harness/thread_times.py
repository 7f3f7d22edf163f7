"""Per thread of this process, over a test: seconds on a CPU and seconds runnable but waiting for one.

Linux keeps both per thread in /proc/self/task/<tid>/schedstat (CPU ns, run-queue wait ns, timeslices), and in
/proc/self/task/<tid>/stat the minor page faults and the CPU time split into user and kernel (clock ticks): a
thread whose work slows while on a CPU with its kernel share up spends it in page faults or other system calls. Beside the
SUT's per-batch CPU time (batch_stamps.CPU_PHASES) they say why a slow batch's thread was off the CPUs: a long
run-queue wait means the scheduler kept it waiting for a CPU; a short one means it was blocked (a lock, the GIL, a
device call). result.json's `host_cpu.threads` lists the threads alive at the end of the test, Python threads by
their name (batcher, complete_0, cuda-complete_0, stall-watch, ...), others as `native <tid>`.

Why these files are read here and not through psutil: psutil has neither the run-queue wait nor the timeslices
(schedstat) nor per-thread page faults; its Process.threads() gives each thread's user and system seconds only,
read from the same stat file this module reads anyway for the minor faults, so one read of that file gives all
three (and the ticks belong to the same moment as the faults).
"""

from __future__ import annotations

import threading
from pathlib import Path

from dlrm_bench.harness.cpu_affinity import TASKS

SHOWN = 16
"""Threads listed at most (the most CPU first)."""

Reading = dict[int, tuple[int, ...]]
"""tid -> (ns on a CPU, ns waiting on a run queue, timeslices[, minor faults, user ticks, kernel ticks])."""


def parse_task_stat(text: str) -> tuple[str, int, int, int]:
    """(name, minor faults, user ticks, kernel ticks) from the text of a task's stat file (fields 2, 10, 14, 15;
    the name in parentheses may hold spaces and parentheses, so the fields count from the last ')')."""
    close = text.rindex(")")
    fields = text[close + 2:].split()
    return text[text.index("(") + 1:close], int(fields[7]), int(fields[11]), int(fields[12])


def read_task_stat(entry: Path) -> tuple[int, int, int]:
    """(minor faults, user ticks, kernel ticks) of the task whose /proc directory is `entry`."""
    return parse_task_stat((entry / "stat").read_text(encoding="ascii", errors="replace"))[1:]


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
            sched = (int(fields[0]), int(fields[1]), int(fields[2]))
        except (OSError, ValueError, IndexError):
            continue  # the thread ended, or no schedstat
        try:
            out[int(entry.name)] = sched + read_task_stat(entry)
        except (OSError, ValueError, IndexError):
            out[int(entry.name)] = sched
    return out


def python_thread_names() -> dict[int, str]:
    """Native thread id -> Python thread name, for the Python threads alive now."""
    return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


def thread_deltas(before: Reading, after: Reading, names: dict[int, str], shown: int = SHOWN) -> list[dict]:
    """Per thread alive at `after` (new ones count from zero): name, tid, cpu_s, run_queue_wait_s, timeslices, and
    where the stat file was read, minor_faults and kernel_share (kernel ticks / all ticks); the `shown` with the
    most CPU time."""
    rows = []
    for tid, now in after.items():
        then = before.get(tid, (0,) * len(now))
        delta = [a - b for a, b in zip(now, then)]
        row = {"name": names.get(tid, f"native {tid}"), "tid": tid, "cpu_s": delta[0] / 1e9,
               "run_queue_wait_s": delta[1] / 1e9, "timeslices": delta[2]}
        if len(delta) == 6:
            ticks = delta[4] + delta[5]
            row.update(minor_faults=delta[3], kernel_share=round(delta[5] / ticks, 3) if ticks else 0.0)
        rows.append(row)
    return sorted(rows, key=lambda r: -r["cpu_s"])[:shown]
