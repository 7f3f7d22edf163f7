"""Which dataset and which model a command means: the --dataset / --dataset-dir / --model rules in one place.

- `--dataset auto` is `terabyte` when the real data is present (its preprocessed meta.json, or the 24 raw days),
  else `synthetic-tiny`.
- the dataset folder is `--dataset-dir` if given, else `paths.preprocessed_dir(name)`; with `--dataset-dir` and
  `--dataset auto`, the name is the one in that folder's meta.json (or the folder's name).
- the model is `--model` if given, else `paths.models_dir()/tb00_40M.pt` for terabyte and
  `paths.models_dir()/<dataset>.pt` for every other dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrm_bench import paths
from dlrm_bench.criteo.schema import NUM_DAYS

TERABYTE = "terabyte"
DEFAULT_SYNTHETIC = "synthetic-tiny"
REFERENCE_MODEL_FILE = "tb00_40M.pt"


@dataclass(frozen=True)
class Located:
    """The resolved dataset name, its preprocessed folder and the checkpoint path."""

    dataset: str
    dataset_dir: Path
    model_path: Path


def real_data_present() -> bool:
    """True when the terabyte dataset is preprocessed, or all 24 raw days (plain or .gz) are in place."""
    if (paths.preprocessed_dir(TERABYTE) / "meta.json").is_file():
        return True
    raw = paths.raw_days_dir(TERABYTE)
    return all((raw / f"day_{k}").is_file() or (raw / f"day_{k}.gz").is_file() for k in range(NUM_DAYS))


def resolve_dataset_name(dataset: str | None) -> str:
    """'auto' (or None) -> terabyte if the real data is present, else synthetic-tiny; other names unchanged."""
    if dataset in (None, "", "auto"):
        return TERABYTE if real_data_present() else DEFAULT_SYNTHETIC
    return dataset


def default_model_path(dataset: str) -> Path:
    """models/dlrm/tb00_40M.pt for terabyte, models/dlrm/<dataset>.pt otherwise."""
    name = REFERENCE_MODEL_FILE if dataset == TERABYTE else f"{dataset}.pt"
    return paths.models_dir() / name


def _name_in_meta(directory: Path) -> str | None:
    try:
        return str(json.loads((directory / "meta.json").read_text())["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def locate(dataset: str | None = "auto", dataset_dir: Path | None = None, model: Path | None = None) -> Located:
    """Apply the rules above to the three command-line values (any may be None)."""
    if dataset_dir is not None:
        directory = Path(dataset_dir).expanduser().resolve()
        name = dataset if dataset not in (None, "", "auto") else (_name_in_meta(directory) or directory.name)
    else:
        name = resolve_dataset_name(dataset)
        directory = paths.preprocessed_dir(name)
    model_path = Path(model).expanduser() if model is not None else default_model_path(name)
    return Located(name, directory, model_path)


def locate_args(args: Any) -> Located:
    """locate() from an argparse namespace with dataset / dataset_dir / model attributes (missing ones = None)."""
    return locate(getattr(args, "dataset", "auto"), getattr(args, "dataset_dir", None), getattr(args, "model", None))
