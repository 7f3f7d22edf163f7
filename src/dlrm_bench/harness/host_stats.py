"""What the host's CPUs did during a test, for telling a slow SUT from a busy or shared machine.

`HostSample` reads the machine-wide CPU times (psutil.cpu_times(), including `steal`: time a virtual machine's CPUs
were runnable but the hypervisor ran something else), this process's context switches and page faults
(getrusage: voluntary = waited for something, involuntary = preempted while runnable) and the machine's
memory-pressure counters from /proc/vmstat (`VMSTAT_FIELDS`: direct compactions and reclaims stall the thread that
faulted, and a thread holding the GIL then stalls the whole harness). `host_delta` turns two samples into seconds and counts for result.json's `host_cpu`. The interrupt counts
per CPU serve the `cpu_affinity` setting (`off-gpu-irqs`). Where the CPU times lack a field (psutil has no iowait
or steal outside Linux) or /proc is missing, those parts are left out.

Why the rest is not psutil: Process.num_ctx_switches() reads /proc/PID/status on Linux, which counts the main
thread only (psutil issue #1467), while getrusage(RUSAGE_SELF) sums every thread of the process; psutil (7.2) has
no page-fault counts (memory_full_info() gives sizes: uss, pss, swap); and it has neither per-IRQ, per-CPU
interrupt counts (cpu_stats() gives the machine's total only) nor /proc/vmstat's compaction and reclaim counters,
so /proc/interrupts and /proc/vmstat are read here.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PROC_INTERRUPTS = Path("/proc/interrupts")
PROC_VMSTAT = Path("/proc/vmstat")
VMSTAT_FIELDS = ("compact_stall", "allocstall", "thp_fault_alloc", "pgmajfault")
"""/proc/vmstat counters kept (`allocstall` sums the per-zone allocstall_* lines of newer kernels)."""
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def read_cpu_times() -> dict[str, float]:
    """Seconds per CPU_FIELDS field summed over all CPUs since boot (psutil.cpu_times(); on Linux the `cpu` line of
    /proc/stat over the clock tick); {} when psutil cannot read them or lacks one of the fields."""
    try:
        times = psutil.cpu_times()._asdict()
    except (OSError, psutil.Error):
        return {}
    if not all(name in times for name in CPU_FIELDS):
        return {}
    return {name: float(times[name]) for name in CPU_FIELDS}


def read_vmstat(path: Path = PROC_VMSTAT) -> dict[str, int]:
    """The VMSTAT_FIELDS counters of /proc/vmstat ({} when it cannot be read); a field the kernel lacks is 0."""
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return {}
    out = dict.fromkeys(VMSTAT_FIELDS, 0)
    for line in lines:
        name, _, value = line.partition(" ")
        key = "allocstall" if name.startswith("allocstall") else name
        if key in out and value.strip().isdigit():
            out[key] += int(value)
    return out


def read_interrupts(path: Path = PROC_INTERRUPTS) -> dict[str, tuple[str, dict[str, int]]]:
    """IRQ -> (what it is, {CPU label: count}) from /proc/interrupts; {} when it cannot be read. Summary lines
    with fewer counts than CPUs (ERR, MIS) keep the counts they have."""
    try:
        lines = path.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return {}
    if not lines:
        return {}
    cpus = lines[0].split()
    out: dict[str, tuple[str, dict[str, int]]] = {}
    for line in lines[1:]:
        fields = line.split()
        if not fields or not fields[0].endswith(":"):
            continue
        counts = []
        for token in fields[1:1 + len(cpus)]:
            if not token.isdigit():
                break
            counts.append(int(token))
        what = " ".join(fields[1 + len(counts):])
        out[fields[0][:-1]] = (what, dict(zip(cpus, counts)))
    return out


@dataclass
class HostSample:
    """One reading: wall clock, machine-wide CPU seconds, this process's context switches and page faults and the
    /proc/vmstat counters."""

    wall: float = field(default_factory=time.perf_counter)
    cpu_times: dict[str, float] = field(default_factory=read_cpu_times)
    voluntary: int = field(default_factory=lambda: resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw)
    involuntary: int = field(default_factory=lambda: resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw)
    minor_faults: int = field(default_factory=lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    major_faults: int = field(default_factory=lambda: resource.getrusage(resource.RUSAGE_SELF).ru_majflt)
    vmstat: dict[str, int] = field(default_factory=read_vmstat)


def host_delta(before: HostSample, after: HostSample) -> dict[str, Any]:
    """Seconds of CPU time per CPU_FIELDS field summed over all CPUs between the samples (`steal_share`: steal
    as a fraction of all CPU time), the wall seconds, the number of CPUs, this process's context switches and page
    faults and the machine's `vmstat` counters."""
    out: dict[str, Any] = {"wall_s": after.wall - before.wall, "cpus": float(os.cpu_count() or 1),
                             "voluntary_switches": float(after.voluntary - before.voluntary),
                             "involuntary_switches": float(after.involuntary - before.involuntary),
                             "minor_faults": float(after.minor_faults - before.minor_faults),
                             "major_faults": float(after.major_faults - before.major_faults)}
    if before.vmstat and after.vmstat:
        out["vmstat"] = {name: float(after.vmstat[name] - before.vmstat[name]) for name in VMSTAT_FIELDS}
    if before.cpu_times and after.cpu_times:
        # rounded to the microsecond: psutil's seconds are ticks / clock rate, and their differences carry float noise
        seconds = {name: round(after.cpu_times[name] - before.cpu_times[name], 6) for name in CPU_FIELDS}
        out.update({f"{name}_s": value for name, value in seconds.items()})
        total = sum(seconds.values())
        out["steal_share"] = seconds["steal"] / total if total > 0 else 0.0
    return out
