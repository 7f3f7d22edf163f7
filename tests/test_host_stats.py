"""host_stats: CPU times, /proc/vmstat and /proc/interrupts readings, and the deltas result.json's `host_cpu` holds."""

from __future__ import annotations

import os
import threading
import time
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from dlrm_bench.harness.host_stats import (CPU_FIELDS, VMSTAT_FIELDS, HostSample, host_delta, read_cpu_times,
                                          read_interrupts, read_vmstat)


def test_cpu_times_are_psutils_seconds_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    times = read_cpu_times()
    if times:  # Linux: every field, the `cpu` line of /proc/stat in seconds
        assert list(times) == list(CPU_FIELDS) and all(v >= 0 for v in times.values())
        ticks = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:1 + len(CPU_FIELDS)]
        seconds = [int(t) / os.sysconf("SC_CLK_TCK") for t in ticks]
        assert all(abs(seconds[i] - times[name]) < 1.0 for i, name in enumerate(CPU_FIELDS))
    fewer = namedtuple("scputimes", "user nice system idle")(1.5, 0.0, 2.0, 9.0)  # no iowait, irq, softirq, steal
    monkeypatch.setattr(psutil, "cpu_times", lambda: fewer)
    assert read_cpu_times() == {}

    def unreadable() -> None:
        raise OSError("no /proc")

    monkeypatch.setattr(psutil, "cpu_times", unreadable)
    assert read_cpu_times() == {}


def test_delta_in_seconds_with_the_steal_share() -> None:
    before = HostSample(wall=1.0, cpu_times=dict.fromkeys(CPU_FIELDS, 0.0), voluntary=5, involuntary=1)
    after_times = dict.fromkeys(CPU_FIELDS, 0.0) | {"user": 3.0, "idle": 6.0, "steal": 1.0}
    after = HostSample(wall=6.0, cpu_times=after_times, voluntary=9, involuntary=4)
    delta = host_delta(before, after)
    assert delta["wall_s"] == 5.0
    assert delta["user_s"] == 3.0 and delta["steal_s"] == 1.0
    assert delta["steal_share"] == 0.1
    assert delta["voluntary_switches"] == 4 and delta["involuntary_switches"] == 3


def test_vmstat_counters_are_read_and_per_zone_allocstalls_summed(tmp_path: Path) -> None:
    vmstat = tmp_path / "vmstat"
    vmstat.write_text("pgfault 900\npgmajfault 7\nallocstall_dma 1\nallocstall_normal 4\ncompact_stall 2\n"
                      "thp_fault_alloc 30\nnr_free_pages 5\n")
    assert read_vmstat(vmstat) == {"compact_stall": 2, "allocstall": 5, "thp_fault_alloc": 30, "pgmajfault": 7}
    vmstat.write_text("pgmajfault 7\n")  # an older kernel without the rest: zeros
    assert read_vmstat(vmstat) == {"compact_stall": 0, "allocstall": 0, "thp_fault_alloc": 0, "pgmajfault": 7}
    assert read_vmstat(tmp_path / "missing") == {}


def test_context_switches_count_every_thread() -> None:
    """getrusage sums the process's threads (psutil's num_ctx_switches would count the main thread only)."""
    before = HostSample()
    worker = threading.Thread(target=lambda: [time.sleep(0.001) for _ in range(100)])
    worker.start()
    worker.join()
    assert host_delta(before, HostSample())["voluntary_switches"] >= 100


def test_faults_and_vmstat_deltas() -> None:
    before = HostSample(minor_faults=10, major_faults=1, vmstat=dict.fromkeys(VMSTAT_FIELDS, 3))
    after = HostSample(minor_faults=25, major_faults=2, vmstat=dict.fromkeys(VMSTAT_FIELDS, 3) | {"compact_stall": 5})
    delta = host_delta(before, after)
    assert delta["minor_faults"] == 15 and delta["major_faults"] == 1
    assert delta["vmstat"] == {"compact_stall": 2, "allocstall": 0, "thp_fault_alloc": 0, "pgmajfault": 0}
    assert "vmstat" not in host_delta(HostSample(vmstat={}), after)


def test_a_real_sample_moves_forward() -> None:
    before = HostSample()
    sum(range(2_000_000))
    delta = host_delta(before, HostSample())
    assert delta["wall_s"] > 0
    if before.cpu_times:  # Linux
        assert all(delta[f"{name}_s"] >= 0 for name in CPU_FIELDS)
        assert 0.0 <= delta["steal_share"] <= 1.0


INTERRUPTS = """           CPU0       CPU1       CPU3
  24:          1          0          0  IO-APIC   5-edge      ACPI:Ged
 130:        500         20         10  PCI-MSI 524288-edge      nvidia
NMI:          0          0          0   Non-maskable interrupts
LOC:       1000       2000       3000   Local timer interrupts
ERR:          0
"""


def test_interrupts_are_read_per_cpu_label(tmp_path: Path) -> None:
    path = tmp_path / "interrupts"
    path.write_text(INTERRUPTS)
    irqs = read_interrupts(path)
    assert irqs["130"] == ("PCI-MSI 524288-edge nvidia", {"CPU0": 500, "CPU1": 20, "CPU3": 10})
    assert irqs["LOC"][1] == {"CPU0": 1000, "CPU1": 2000, "CPU3": 3000}
    assert irqs["ERR"] == ("", {"CPU0": 0})
    assert read_interrupts(tmp_path / "missing") == {}
