"""Preflight: before a long step starts, check free disk space and available RAM against what it will need.

`dlrm-bench` runs the check for preprocess, generate-data, generate-engines, make-random-preset and train (and
download-model checks the disk before each transfer). A shortfall is a UserError that names the step, the folder
(and the disk it is on) or the memory, what is needed, what is there, and what the estimate is made of; nothing
has been written at that point. `DLRM_BENCH_SKIP_PREFLIGHT=1` skips the checks.

The needs are estimates from what the step will write, computed from its inputs:

- generate-data: disk rows x 241 B (text) or x 99 B (.gz), as measured on synthetic days; RAM ~1 GB.
- preprocess: disk the split arrays (160 B per training row, 375 B per test / calibration row, +64 B with
  --compress) from the raw row count (each day's size over the mean line length of its first MiB), plus 10% for
  the work state; RAM workers x (30 x max_ind_range + 512 MiB), the scan stage's peak.
- generate-engines: disk the int8 tables (rows x 128 B) + the MLP file; RAM the whole checkpoint if it is in
  torch's legacy (non-zip) format, which is read whole, else ~1.1 GB of chunks.
- make-random-preset: disk test + calibration arrays (215 B per pair) + the int8 tables; RAM ~2 GB of chunks.
- train: disk the checkpoint (rows x 512 B); RAM the fp32 tables twice (the model's and the fused copy) +
  the Adagrad state + ~1 GB.

Bytes already present in the output (a resumed or repeated step) count as available.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dlrm_bench import paths
from dlrm_bench.criteo.schema import CALIBRATION_ROWS, CRITEO_TB_TEST_PAIRS, EMBEDDING_DIM, NUM_SPARSE
from dlrm_bench.errors import UserError

SKIP_ENV = "DLRM_BENCH_SKIP_PREFLIGHT"
GiB = 1 << 30
MiB = 1 << 20
DISK_SLACK = 64 * MiB
"""Kept free on top of every disk estimate (file system metadata, logs)."""
TEXT_ROW_BYTES = 241
GZIP_ROW_BYTES = 99
"""Bytes per row of synthetic days, measured (generate-data, tiny scale, 20,000 rows per day)."""
TRAIN_ROW_BYTES = 4 + 13 * 4 + 26 * 4
"""ground_truth, numeric_fp32, categorical_int32 per row of a training day."""
EVAL_ROW_BYTES = TRAIN_ROW_BYTES + 13 * 2 + 13 + 16 + 40 * 4
"""... plus numeric_fp16, numeric_int8_linear, numeric_int8_chw4 and data.bin per test / calibration row."""
PRESET_ROW_BYTES = 4 + 13 * 4 + 13 * 2 + 13 + 16 + 26 * 4
"""The criteo-tb-random preset's split arrays per pair (no data.bin)."""
COMPRESSED_ROW_BYTES = 16 * 4
WORK_FRACTION = 0.10
"""Preprocessing's .work state (first-appearance lists, lookup tables, per-day counts) relative to the arrays."""
MLP_BYTES = 10 * MiB
SAMPLE_BYTES = 1 * MiB
"""Uncompressed text sampled from the start of each raw day to estimate its row count."""


@dataclass
class Needs:
    """What a step needs: bytes per output folder (with what they are for) and bytes of RAM."""

    disk: list[tuple[Path, int, str]] = field(default_factory=list)
    ram: int = 0
    ram_what: str = ""


def human(nbytes: float) -> str:
    """1234567890 -> '1.1 GiB'."""
    for unit, size in (("TiB", 1 << 40), ("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent (the folder whose disk the step will write to)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_disk(path: Path) -> int:
    return shutil.disk_usage(_existing(path)).free


def available_ram() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _hint() -> str:
    return f"(set {SKIP_ENV}=1 to skip this check)"


def require_disk(step: str, path: Path, needed: int, what: str) -> None:
    """UserError unless the disk holding `path` has `needed` bytes (plus slack) free."""
    if os.environ.get(SKIP_ENV) == "1" or needed <= 0:
        return
    free = free_disk(path)
    if needed + DISK_SLACK > free:
        raise UserError(f"{step} needs about {human(needed)} free disk space in {path} ({what}), but the disk "
                        f"holding {_existing(path)} has only {human(free)} free: free some space or write to a "
                        f"larger disk (MLPERF_SCRATCH_PATH, --output) {_hint()}")


def require_ram(step: str, needed: int, what: str) -> None:
    """UserError unless `needed` bytes of RAM are available now."""
    if os.environ.get(SKIP_ENV) == "1" or needed <= 0:
        return
    available = available_ram()
    if needed > available:
        raise UserError(f"{step} needs about {human(needed)} of RAM ({what}), but only {human(available)} is "
                        f"available: close other programs or use a machine with more memory {_hint()}")


def check(step: str, needs: Needs) -> None:
    """Every disk need (summed per folder's disk) and the RAM need; the first shortfall raises."""
    by_device: dict[int, list[tuple[Path, int, str]]] = {}
    for path, nbytes, what in needs.disk:
        by_device.setdefault(os.stat(_existing(path)).st_dev, []).append((path, nbytes, what))
    for items in by_device.values():
        total = sum(n for _, n, _ in items)
        what = "; ".join(f"{human(n)} for {w}" for _, n, w in items if n > 0)
        require_disk(step, items[0][0], total, what)
    require_ram(step, needs.ram, needs.ram_what)


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (0 when missing)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# ----------------------------------------------------------------------------------------------------------------
# generate-data


def generate_data_needs(args: argparse.Namespace) -> Needs:
    from dlrm_bench.criteo.synthetic import SCALES

    spec = SCALES.get(args.scale)
    if spec is None:
        return Needs()
    days = spec.num_days if args.days is None else int(args.days)
    rows = spec.rows_per_day if args.rows_per_day is None else int(args.rows_per_day)
    output = Path(args.output) if args.output is not None else paths.raw_days_dir(f"synthetic-{args.scale}")
    per_row = GZIP_ROW_BYTES if args.gzip else TEXT_ROW_BYTES
    need = days * rows * per_row - folder_bytes(output)
    return Needs([(output, need, f"{days} day files x {rows:,} rows")], GiB, "the generator's chunks")


# ----------------------------------------------------------------------------------------------------------------
# preprocess


def _sample_text(path: Path) -> tuple[bytes, float]:
    """The first SAMPLE_BYTES of a day's text and the ratio of text bytes to file bytes (1 for plain files)."""
    if path.suffix != ".gz":
        with open(path, "rb") as f:
            return f.read(SAMPLE_BYTES), 1.0
    inflate = zlib.decompressobj(wbits=31)
    parts: list[bytes] = []
    got = consumed = 0
    with open(path, "rb") as f:
        while got < SAMPLE_BYTES and (block := f.read(64 << 10)):
            data = inflate.decompress(block, SAMPLE_BYTES - got)
            parts.append(data)
            got += len(data)
            consumed += len(block) - len(inflate.unconsumed_tail)
            if inflate.unconsumed_tail or inflate.eof:
                break
    return b"".join(parts), (got / consumed if consumed else 3.0)


def estimate_rows(path: Path) -> int:
    """Rows of a raw day file: its (uncompressed) size over the mean line length of its first MiB."""
    size = path.stat().st_size
    if size == 0:
        return 0
    try:
        text, ratio = _sample_text(path)
    except (OSError, EOFError, zlib.error):
        return math.ceil(size / TEXT_ROW_BYTES)
    lines = text.count(b"\n")
    per_line = len(text) / lines if lines else TEXT_ROW_BYTES
    return math.ceil(size * ratio / max(per_line, 1.0))


def preprocess_needs(args: argparse.Namespace) -> Needs:
    from dlrm_bench.criteo.reader import day_files

    raw_dir = Path(args.raw_dir) if args.raw_dir else paths.raw_days_dir(args.name)
    output = Path(args.output) if args.output else paths.preprocessed_dir(args.name)
    days = day_files(raw_dir)
    rows = [estimate_rows(p) for p in days]
    last = rows[-1]
    test = math.ceil(last / 2)
    calibration = min(CALIBRATION_ROWS, last - test)
    eval_row = EVAL_ROW_BYTES + (COMPRESSED_ROW_BYTES if args.compress else 0)
    arrays = sum(rows[:-1]) * TRAIN_ROW_BYTES + (test + calibration) * eval_row
    need = int(arrays * (1 + WORK_FRACTION)) - folder_bytes(output)
    r = int(args.max_ind_range)
    workers = max(1, min(int(args.workers or 1), len(days)))
    per_worker = 30 * r + 512 * MiB
    return Needs([(output, need, f"split arrays of ~{sum(rows):,} rows of {len(days)} day files + work state")],
                 workers * per_worker,
                 f"{workers} worker(s) x {human(per_worker)} at max_ind_range {r:,} (scan stage)")


# ----------------------------------------------------------------------------------------------------------------
# generate-engines, train


def _located(args: argparse.Namespace) -> tuple[tuple[int, ...], Path]:
    """(cardinalities from the dataset's meta.json, model path) by the --dataset / --dataset-dir / --model rules."""
    import json

    from dlrm_bench.inputs import locate_args

    located = locate_args(args)
    meta = json.loads((located.dataset_dir / "meta.json").read_text())
    cards = tuple(int(c) for c in meta["cardinalities"])
    if len(cards) != NUM_SPARSE:
        raise ValueError("not 26 tables")
    return cards, located.model_path


def generate_engines_needs(args: argparse.Namespace) -> Needs:
    from dlrm_bench.quant import artifacts, tables

    cards, model = _located(args)
    if not Path(model).is_file():
        return Needs()
    folder = artifacts.derived_dir(model)
    try:
        import json

        current = json.loads((folder / artifacts.SOURCE_FILE).read_text()).get("model_key")
        if current == artifacts.model_key(model) and (folder / tables.TABLES_FILE).exists():
            return Needs()
    except (OSError, ValueError):
        pass
    table_bytes = sum(cards) * EMBEDDING_DIM + 4 + 4 * len(cards)
    need = table_bytes + MLP_BYTES - folder_bytes(folder / tables.TABLES_FILE)
    legacy = not zipfile.is_zipfile(model)
    ram = Path(model).stat().st_size if legacy else 2 * tables.CHUNK_ROWS * EMBEDDING_DIM * 4 + 64 * MiB
    what = ("the checkpoint is in torch's legacy format, which is read into memory whole" if legacy
            else "two fp32 chunks of table rows")
    return Needs([(folder, need, f"int8 tables of {sum(cards):,} rows + MLP file")], ram, what)


def train_needs(args: argparse.Namespace) -> Needs:
    from dlrm_bench.inputs import locate_args

    cards, model = _located(args)
    output = Path(getattr(args, "output", None) or locate_args(args).model_path)
    rows = sum(cards)
    table_bytes = rows * EMBEDDING_DIM * 4
    existing = output.stat().st_size if output.is_file() else 0
    ram = 2 * table_bytes + 4 * rows + GiB
    return Needs([(output.parent, table_bytes + MLP_BYTES - existing, f"checkpoint {output.name}")], ram,
                 f"fp32 tables of {rows:,} rows, held twice while the model is built, + Adagrad state")


# ----------------------------------------------------------------------------------------------------------------
# make-random-preset


def random_preset_needs(args: argparse.Namespace) -> Needs:
    from dlrm_bench.random_preset import PRESET_NAME, _parse_cardinalities

    cards = _parse_cardinalities(getattr(args, "cardinalities", None))
    what = getattr(args, "what", None) or "all"
    needs = Needs(ram=2 * GiB, ram_what="generated chunks")
    if what in ("all", "data"):
        out = Path(args.output) if args.output else paths.preprocessed_dir(PRESET_NAME)
        pairs = int(args.num_pairs or CRITEO_TB_TEST_PAIRS)
        calibration = CALIBRATION_ROWS if args.calibration_rows is None else int(args.calibration_rows)
        need = (pairs + calibration) * PRESET_ROW_BYTES + 4 * sum(cards) - folder_bytes(out)
        needs.disk.append((out, need, f"{pairs:,} test pairs + {calibration:,} calibration pairs"))
    if what in ("all", "model"):
        out = Path(args.model_output) if args.model_output else paths.models_dir() / PRESET_NAME
        need = sum(cards) * EMBEDDING_DIM + MLP_BYTES - folder_bytes(out)
        needs.disk.append((out, need, f"int8 tables of {sum(cards):,} rows"))
    return needs


# ----------------------------------------------------------------------------------------------------------------
# Entry point for the CLI

ESTIMATORS: dict[str, Callable[[argparse.Namespace], Needs]] = {
    "generate-data": generate_data_needs,
    "preprocess": preprocess_needs,
    "generate-engines": generate_engines_needs,
    "train": train_needs,
    "make-random-preset": random_preset_needs,
}


def run(args: argparse.Namespace) -> None:
    """The check for `args.command` (called by the CLI before the step). An estimate that cannot be made (a
    missing input, say) is skipped: the step itself then reports the problem in its own words."""
    estimator = ESTIMATORS.get(getattr(args, "command", ""))
    if estimator is None or os.environ.get(SKIP_ENV) == "1":
        return
    try:
        needs = estimator(args)
    except (UserError, OSError, ValueError, KeyError, TypeError):
        return
    check(args.command, needs)
