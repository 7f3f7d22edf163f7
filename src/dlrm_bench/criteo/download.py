"""`make download_data` / `dlrm-bench check-data`: are the 24 Criteo Terabyte day files in place?

The dataset cannot be fetched automatically (it needs accepting Criteo's terms), so this only checks
`$MLPERF_SCRATCH_PATH/data/criteo/day_0 .. day_23` (plain or .gz), lists what is missing and says where the data
comes from. Exit status 0 when all 24 are present, 1 otherwise.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from dlrm_bench import paths
from dlrm_bench.criteo.reader import day_problem
from dlrm_bench.criteo.schema import NUM_DAYS

DATASET_NAME = "Criteo 1TB Click Logs"
DATASET_URL = "https://ailab.criteo.com/download-criteo-1tb-click-logs-dataset/"


@dataclass(frozen=True)
class DayStatus:
    """One expected day file: where it was found (or None) and why it does not count."""

    name: str
    path: Path | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_days(raw_dir: Path, num_days: int = NUM_DAYS) -> list[DayStatus]:
    """Status of day_0 .. day_{num_days-1} under raw_dir: present (plain or .gz, non-empty), missing, or why the
    file found cannot be a day (`day_problem`: a directory, an empty or unreadable file)."""
    out = []
    for k in range(num_days):
        name = f"day_{k}"
        present = [p for p in (raw_dir / name, raw_dir / f"{name}.gz") if p.exists()]
        found = next((p for p in present if p.is_dir()), present[0] if present else None)
        out.append(DayStatus(name, found, "missing" if found is None else day_problem(found)))
    return out


def instructions(raw_dir: Path) -> str:
    """How to get the dataset into raw_dir."""
    return (f"The dataset is the {DATASET_NAME} ({NUM_DAYS} files day_0 .. day_{NUM_DAYS - 1}, ~1 TB uncompressed):\n"
            f"  1. download day_0.gz .. day_{NUM_DAYS - 1}.gz from {DATASET_URL}\n"
            f"     (accept Criteo's terms of use there)\n"
            f"  2. put them, compressed or not, in {raw_dir}/\n"
            f"  3. run `make preprocess_data`\n"
            f"Without the real data, `make run` uses the built-in synthetic dataset "
            f"(`make generate_data` writes it).")


def main(args: argparse.Namespace) -> int:
    """Print what is present and missing; 0 when all day files are there, 1 otherwise."""
    raw_dir = Path(args.raw_dir) if getattr(args, "raw_dir", None) else paths.raw_days_dir("terabyte")
    statuses = check_days(raw_dir)
    present = [s for s in statuses if s.ok]
    bad = [s for s in statuses if not s.ok]
    if not bad:
        size = sum(s.path.stat().st_size for s in present if s.path is not None)
        print(f"{raw_dir}: all {NUM_DAYS} day files present ({size / 1e9:.1f} GB on disk)")
        return 0
    print(f"{raw_dir}: {len(present)} of {NUM_DAYS} day files present; {len(bad)} not usable:")
    for s in bad:
        where = f" ({s.path})" if s.path is not None else ""
        print(f"  {s.name}: {s.problem}{where}")
    print(instructions(raw_dir))
    return 1
