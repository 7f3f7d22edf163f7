"""The `cpu_affinity` setting: run the whole process (every thread it has and will start) on a list of CPUs.

MLPerf submitters pin their harness with numactl; this does the same from the config, e.g. to keep LoadGen, the
batcher and the completion threads off the CPUs that take the GPU's interrupts (/proc/interrupts names them). The
value is a Linux CPU list: "2-15", "0,2,4-7", or "off-gpu-irqs": the CPUs the process started with
less every CPU that has served an nvidia interrupt (/proc/interrupts, counted since boot). CPUs outside the set the
process started with are an error that names them.
"""

from __future__ import annotations

import os
from pathlib import Path

from dlrm_bench.errors import UserError
from dlrm_bench.harness.host_stats import PROC_INTERRUPTS, read_interrupts
from dlrm_bench.settings import CPU_LIST, OFF_GPU_IRQS

STARTED_WITH: frozenset[int] = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
"""The CPUs this process could run on when it started (a container's cpuset, taskset): the allowed choices."""
TASKS = Path("/proc/self/task")
GPU_IRQ_MATCH = "nvidia"


def serving_cpus(irqs: dict[str, tuple[str, dict[str, int]]], match: str) -> dict[int, int]:
    """CPU number -> interrupts it took from the sources whose description contains `match` (read_interrupts'
    form)."""
    out: dict[int, int] = {}
    for what, counts in irqs.values():
        if match.lower() in what.lower():
            for label, n in counts.items():
                if n > 0 and label.startswith("CPU") and label[3:].isdigit():
                    out[int(label[3:])] = out.get(int(label[3:]), 0) + n
    return out


def off_gpu_irqs(interrupts: Path = PROC_INTERRUPTS) -> tuple[str | None, str]:
    """The CPU list for OFF_GPU_IRQS, or None (stay as started) when no CPU served an nvidia interrupt or every
    one did; and a line that says which."""
    served = serving_cpus(read_interrupts(interrupts), GPU_IRQ_MATCH)
    if not served:
        return None, f"cpu_affinity {OFF_GPU_IRQS}: no {GPU_IRQ_MATCH} interrupt in {interrupts}; not pinned"
    rest = sorted(STARTED_WITH - set(served))
    if not rest:
        return None, (f"cpu_affinity {OFF_GPU_IRQS}: every CPU of this process ({compact(STARTED_WITH)}) serves "
                      f"{GPU_IRQ_MATCH} interrupts; not pinned")
    return compact(rest), f"cpu_affinity {OFF_GPU_IRQS}: {compact(rest)} (the GPU's interrupts on {compact(served)})"


def parse_cpu_list(text: str, source: str = "cpu_affinity") -> list[int]:
    """'0-3,8' -> [0, 1, 2, 3, 8] (sorted, each once); UserError naming `source` for anything else."""
    if not isinstance(text, str) or not CPU_LIST.match(text):
        raise UserError(f"{source}: setting 'cpu_affinity' is {text!r}: expected a CPU list like \"2-15\" or "
                        f"\"0,2,4-7\", or \"{OFF_GPU_IRQS}\"")
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


def apply_cpu_affinity(text: str, source: str = "cpu_affinity",
                       interrupts: Path = PROC_INTERRUPTS) -> list[int] | None:
    """Pin every current thread of this process (and so every thread they start) to the CPUs of `text` (a CPU
    list, or OFF_GPU_IRQS resolved from `interrupts`). Returns them, or None when OFF_GPU_IRQS leaves the process
    as started. UserError when the list is malformed or names CPUs the process was not started with."""
    if text == OFF_GPU_IRQS:
        resolved, note = off_gpu_irqs(interrupts)
        print(note, flush=True)
        if resolved is None:
            return None
        text = resolved
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
