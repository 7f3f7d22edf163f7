"""Inputs the CPU-side benchmarks share: the given dataset and model, else synthetic-tiny, else a fixture."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

from dlrm_bench.paths import models_dir, preprocessed_dir, scratch_path


def fixture_inputs(pairs: int, kind: str, calibration_rows: int) -> tuple[Path, Path]:
    """A fixture dataset (tests/conftest.py writer; the repository root must be on sys.path) and a randomly
    initialised DLRM with full-size MLPs and tiny tables, under build/bench/<kind>_fixture/."""
    from tests.conftest import save_random_model, write_preprocessed_dataset

    root = scratch_path() / "bench" / f"{kind}_fixture"
    data, model_path = root / f"data_{pairs}", root / "model.pt"
    if not (data / "meta.json").exists():
        write_preprocessed_dataset(data, test_rows=pairs, num_days=1, rows_per_day=1000,
                                   calibration_rows=calibration_rows, max_sample=540,
                                   name=f"{kind}-bench-fixture-{pairs}")
    if not model_path.exists():
        save_random_model(model_path)
    return data, model_path


def pick_inputs(args: argparse.Namespace, kind: str, calibration_rows: int) -> tuple[Path, Path, str]:
    """(dataset dir, model, what it is): --dataset-dir and --model, else synthetic-tiny, else a fixture of
    --pairs pairs."""
    if args.dataset_dir and args.model:
        return args.dataset_dir, args.model, "given"
    tiny, tiny_model = preprocessed_dir("synthetic-tiny"), models_dir() / "synthetic-tiny.pt"
    if (tiny / "meta.json").exists() and tiny_model.exists():
        return tiny, tiny_model, "synthetic-tiny"
    data, model = fixture_inputs(args.pairs, kind, calibration_rows)
    return data, model, "fixture (tests/conftest.py writer, random full-size MLPs, tiny tables)"


def run_main(main: Callable[[], int]) -> int:
    """A benchmark's exit status, with a bad input (UserError: missing preset, unreadable file...) or Ctrl-C
    reported in one line instead of a traceback."""
    from dlrm_bench.errors import exit_status

    return exit_status(Path(sys.argv[0]).name, main)


def write_report(out_dir: Path, name: str, report: dict) -> Path:
    """`report` as indented JSON in out_dir/name, written under a temporary name and renamed, so that a reader (or
    an interrupted run) never leaves half a file. Returns the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    return path
