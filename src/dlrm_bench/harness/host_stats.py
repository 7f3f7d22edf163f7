"""What the host's CPUs did during a test, for telling a slow SUT from a busy or shared machine.

`HostSample` reads the machine-wide CPU times from /proc/stat (including `steal`: time a virtual machine's CPUs
were runnable but the hypervisor ran something else) and this process's context switches (getrusage: voluntary =
waited for something, involuntary = preempted while runnable). `host_delta` turns two samples into seconds and
counts for result.json's `host_cpu`. On a system without /proc/stat the CPU times are left out.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

PROC_STAT = Path("/proc/stat")
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def read_cpu_ticks(path: Path = PROC_STAT) -> dict[str, int]:
    """The aggregate `cpu` line of /proc/stat as clock ticks per field ({} when it cannot be read)."""
    try:
        with open(path, encoding="ascii") as f:
            first = f.readline().split()
    except OSError:
        return {}
    if not first or first[0] != "cpu":
        return {}
    values = [int(v) for v in first[1:1 + len(CPU_FIELDS)]]
    return dict(zip(CPU_FIELDS, values))


@dataclass
class HostSample:
    """One reading: wall clock, machine-wide CPU ticks, this process's context switches."""

    wall: float = field(default_factory=time.perf_counter)
    ticks: dict[str, int] = field(default_factory=read_cpu_ticks)
    voluntary: int = field(default_factory=lambda: resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw)
    involuntary: int = field(default_factory=lambda: resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw)


def host_delta(before: HostSample, after: HostSample) -> dict[str, float]:
    """Seconds of CPU time per /proc/stat field summed over all CPUs between the samples (`steal_share`: steal
    as a fraction of all CPU time), the wall seconds, the number of CPUs, and this process's context switches."""
    out: dict[str, float] = {"wall_s": after.wall - before.wall, "cpus": float(os.cpu_count() or 1),
                             "voluntary_switches": float(after.voluntary - before.voluntary),
                             "involuntary_switches": float(after.involuntary - before.involuntary)}
    if before.ticks and after.ticks:
        hertz = os.sysconf("SC_CLK_TCK")
        seconds = {name: (after.ticks[name] - before.ticks[name]) / hertz for name in CPU_FIELDS}
        out.update({f"{name}_s": value for name, value in seconds.items()})
        total = sum(seconds.values())
        out["steal_share"] = seconds["steal"] / total if total > 0 else 0.0
    return out
