"""The CPUs that serve a device's interrupts, and the CPU list without them, for the `cpu_affinity` setting.

    python3 benchmarks/irq_cpus.py                 # prints e.g. "0-6,8-15": this process's CPUs minus nvidia's
    python3 benchmarks/irq_cpus.py --match nvme --show

Reads /proc/interrupts: every interrupt line whose description contains --match (case-insensitive; default
"nvidia") counts, and a CPU that took any of those interrupts is left out. --show also prints, on stderr, the
matching lines and their busiest CPUs. Exit 2 with one line when nothing matches or nothing would be left.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dlrm_bench.harness.cpu_affinity import STARTED_WITH, compact, serving_cpus  # noqa: E402
from dlrm_bench.harness.host_stats import PROC_INTERRUPTS, read_interrupts  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--match", default="nvidia", help="part of the interrupt description (default nvidia)")
    p.add_argument("--interrupts", type=Path, default=PROC_INTERRUPTS, help=argparse.SUPPRESS)
    p.add_argument("--show", action="store_true", help="print the serving CPUs and their counts on stderr")
    args = p.parse_args(argv)
    served = serving_cpus(read_interrupts(args.interrupts), args.match)
    if not served:
        print(f"irq_cpus.py: error: no interrupt in {args.interrupts} matches {args.match!r}", file=sys.stderr)
        return 2
    rest = sorted(set(STARTED_WITH) - set(served))
    if args.show:
        busiest = ", ".join(f"CPU{c}: {n}" for c, n in sorted(served.items(), key=lambda p: -p[1]))
        print(f"{args.match} interrupts served by {busiest}", file=sys.stderr)
    if not rest:
        print(f"irq_cpus.py: error: every CPU of this process ({compact(STARTED_WITH)}) serves {args.match!r} "
              "interrupts", file=sys.stderr)
        return 2
    print(compact(rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
