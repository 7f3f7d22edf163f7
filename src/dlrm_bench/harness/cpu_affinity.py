"""The `cpu_affinity` setting: run the whole process (every thread it has and will start) on a list of CPUs.

MLPerf submitters pin their harness with numactl; this does the same from the config, e.g. to keep LoadGen, the
batcher and the completion threads off the CPUs that take the GPU's interrupts (`host_cpu.irq_top` in result.json
names them). The value is a Linux CPU list: "2-15", "0,2,4-7". CPUs outside the set the process started with are an
error that names them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from dlrm_bench.errors import UserError

CPU_LIST = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")
"""A Linux CPU list: ranges and single CPUs separated by commas."""
STARTED_WITH: frozenset[int] = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
"""The CPUs this process could run on when it started (a container's cpuset, taskset): the allowed choices."""
TASKS = Path("/proc/self/task")


def parse_cpu_list(text: str, source: str = "cpu_affinity") -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8] (sorted, each once); UserError naming `source` for anything else."""
    if not isinstance(text, str) or not CPU_LIST.match(text):
        raise UserError(f"{source}: setting 'cpu_affinity' is {text!r}: expected a CPU list like \"2-15\" or "
                        f"\"0,2,4-7\"")
    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if last < first:
            raise UserError(f"{source}: setting 'cpu_affinity' is {text!r}: range {part} runs backwards")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def compact(cpus: list[int] | frozenset[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    parts: list[str] = []
    for cpu in sorted(cpus):
        if parts and cpu == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)


def apply_cpu_affinity(text: str, source: str = "cpu_affinity") -> list[int]:
    """Pin every current thread of this process (and so every thread they start) to the CPUs of `text`.
    Returns them. UserError when the list is malformed or names CPUs the process was not started with."""
    cpus = parse_cpu_list(text, source)
    missing = [c for c in cpus if c not in STARTED_WITH]
    if missing:
        raise UserError(f"{source}: setting 'cpu_affinity' is {text!r}: CPU(s) {compact(missing)} not available "
                        f"to this process (it may use {compact(STARTED_WITH)})")
    for tid in thread_ids():
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):
            pass  # the thread ended between the listing and the call
    return cpus


def thread_ids() -> list[int]:
    """This process's thread ids (/proc/self/task; just the calling thread where /proc is missing)."""
    try:
        return [int(name) for name in os.listdir(TASKS)]
    except OSError:
        return [0]
