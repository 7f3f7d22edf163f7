"""host_stats: /proc/stat parsing and the deltas result.json's `host_cpu` holds."""

from __future__ import annotations

import os
from pathlib import Path

from dlrm_bench.harness.host_stats import (CPU_FIELDS, VMSTAT_FIELDS, HostSample, host_delta, irq_top, read_cpu_ticks,
                                          read_interrupts, read_vmstat)


def test_cpu_line_is_read_by_field(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  10 1 20 300 4 0 2 7 0 0\ncpu0 5 0 10 150 2 0 1 3 0 0\nintr 1\n")
    assert read_cpu_ticks(stat) == dict(zip(CPU_FIELDS, [10, 1, 20, 300, 4, 0, 2, 7]))
    assert read_cpu_ticks(tmp_path / "missing") == {}
    (tmp_path / "odd").write_text("intr 1\n")
    assert read_cpu_ticks(tmp_path / "odd") == {}


def test_delta_in_seconds_with_the_steal_share() -> None:
    hertz = os.sysconf("SC_CLK_TCK")
    before = HostSample(wall=1.0, ticks=dict.fromkeys(CPU_FIELDS, 0), voluntary=5, involuntary=1)
    after_ticks = dict.fromkeys(CPU_FIELDS, 0) | {"user": 3 * hertz, "idle": 6 * hertz, "steal": hertz}
    after = HostSample(wall=6.0, ticks=after_ticks, voluntary=9, involuntary=4)
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
    assert read_vmstat(vmstat, fields=("pgfault", "numa_hint_faults")) == {"pgfault": 900, "numa_hint_faults": 0}
    vmstat.write_text("pgmajfault 7\n")  # an older kernel without the rest: zeros
    assert read_vmstat(vmstat) == {"compact_stall": 0, "allocstall": 0, "thp_fault_alloc": 0, "pgmajfault": 7}
    assert read_vmstat(tmp_path / "missing") == {}


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
    if before.ticks:  # Linux
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


def test_irq_top_ranks_sources_by_interrupts_between_readings(tmp_path: Path) -> None:
    path = tmp_path / "interrupts"
    path.write_text(INTERRUPTS)
    before = read_interrupts(path)
    path.write_text(INTERRUPTS.replace("500         20", "9500         25").replace("1000       2000", "1100       2000"))
    top = irq_top(before, read_interrupts(path), top=2)
    assert top == [{"irq": "130", "what": "PCI-MSI 524288-edge nvidia", "count": 9005,
                    "busiest_cpus": {"CPU0": 9000, "CPU1": 5}},
                   {"irq": "LOC", "what": "Local timer interrupts", "count": 100, "busiest_cpus": {"CPU0": 100}}]
    before_sample = HostSample(wall=0.0, ticks={}, irqs=before)
    after_sample = HostSample(wall=1.0, ticks={}, irqs=read_interrupts(path))
    assert host_delta(before_sample, after_sample)["irq_top"][0]["irq"] == "130"
