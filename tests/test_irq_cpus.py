"""benchmarks/irq_cpus.py: the CPU list without the CPUs that serve a device's interrupts."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import irq_cpus  # noqa: E402
from dlrm_bench.harness.cpu_affinity import STARTED_WITH, compact  # noqa: E402

FIRST = min(STARTED_WITH)
INTERRUPTS = f"""           CPU{FIRST}       CPU{FIRST + 1000}
 130:        500          0  PCI-MSI 524288-edge      nvidia
 131:          0          0  PCI-MSI 524289-edge      nvidia
 140:         10         20  PCI-MSI 1-edge      virtio0
LOC:       1000       2000   Local timer interrupts
"""


def test_serving_cpus_count_only_matching_sources(tmp_path: Path) -> None:
    path = tmp_path / "interrupts"
    path.write_text(INTERRUPTS)
    irqs = irq_cpus.read_interrupts(path)
    assert irq_cpus.serving_cpus(irqs, "NVIDIA") == {FIRST: 500}
    assert irq_cpus.serving_cpus(irqs, "virtio") == {FIRST: 10, FIRST + 1000: 20}
    assert irq_cpus.serving_cpus(irqs, "nvme") == {}


def test_prints_the_other_cpus_or_explains(tmp_path: Path, capsys) -> None:
    path = tmp_path / "interrupts"
    path.write_text(INTERRUPTS)
    rest = sorted(set(STARTED_WITH) - {FIRST})
    status = irq_cpus.main(["--interrupts", str(path), "--show"])
    out, err = capsys.readouterr()
    if rest:
        assert status == 0 and out.strip() == compact(rest) and f"CPU{FIRST}: 500" in err
    else:
        assert status == 2 and "every CPU of this process" in err
    assert irq_cpus.main(["--interrupts", str(path), "--match", "nvme"]) == 2
    assert "no interrupt in" in capsys.readouterr().err
