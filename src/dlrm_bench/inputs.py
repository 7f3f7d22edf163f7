"""Which dataset and model a command uses, and building the synthetic ones when nothing real is present."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlrm_bench.criteo.dataset import DatasetMeta, load_meta
from dlrm_bench.errors import UserError
from dlrm_bench.paths import models_dir, preprocessed_dir, raw_days_dir

SYNTHETIC_SCALES = {"synthetic-tiny": "tiny", "synthetic-small": "small", "synthetic-full-day": "full-day"}
KNOWN_DATASETS = ("terabyte", *SYNTHETIC_SCALES, "criteo-tb-random")
REAL_MODEL = "tb00_40M.pt"


def real_data_present() -> bool:
    """True when the real Criteo days or their preprocessed folder are under the scratch path."""
    raw = raw_days_dir("terabyte")
    has_days = raw.is_dir() and any(raw.glob("day_*"))
    return has_days or (preprocessed_dir("terabyte") / "meta.json").exists()


def pick_dataset(name: str) -> str:
    """'auto' -> terabyte if real data is present, else synthetic-tiny (said in one line)."""
    if name != "auto":
        if name not in KNOWN_DATASETS:
            raise UserError(f"unknown dataset '{name}': choose auto or one of {', '.join(KNOWN_DATASETS)}")
        return name
    if real_data_present():
        return "terabyte"
    print(f"no real Criteo data under {raw_days_dir('terabyte')}: using the built-in synthetic dataset "
          f"'synthetic-tiny' (for real data put day_0..day_23 there and run `make preprocess_data`; see README)",
          flush=True)
    return "synthetic-tiny"


def default_model_path(dataset: str) -> Path:
    """build/models/dlrm/tb00_40M.pt for the real data, the generated folder build/models/dlrm/criteo-tb-random/
    for the random preset, build/models/dlrm/<dataset>.pt otherwise."""
    if dataset == "criteo-tb-random":
        return models_dir() / dataset
    return models_dir() / (REAL_MODEL if dataset == "terabyte" else f"{dataset}.pt")


@dataclass(frozen=True)
class Located:
    """The resolved dataset name, its preprocessed folder and the model path (nothing is checked or built)."""

    dataset: str
    dataset_dir: Path
    model_path: Path


def _name_in_meta(directory: Path) -> str | None:
    try:
        return str(json.loads((directory / "meta.json").read_text())["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def locate(dataset: str | None = "auto", dataset_dir: Path | None = None, model: Path | None = None) -> Located:
    """The --dataset / --dataset-dir / --model rules: with --dataset-dir and auto, the name is the one in that
    folder's meta.json (or the folder's name); the model defaults to default_model_path(name)."""
    dataset = dataset or "auto"
    if dataset_dir is not None:
        directory = Path(dataset_dir).expanduser()
        name = dataset if dataset != "auto" else (_name_in_meta(directory) or directory.name)
    else:
        name = pick_dataset(dataset)
        directory = preprocessed_dir(name)
    return Located(name, directory, Path(model).expanduser() if model else default_model_path(name))


def locate_args(args: Any) -> Located:
    """locate() from an argparse namespace with dataset / dataset_dir / model attributes (missing ones = None)."""
    return locate(getattr(args, "dataset", "auto"), getattr(args, "dataset_dir", None), getattr(args, "model", None))


def resolve_inputs(dataset: str, dataset_dir: Path | None, model: Path | None,
                   prepare: bool) -> tuple[DatasetMeta, Path]:
    """(dataset meta, model path). With `prepare`, a missing synthetic dataset or model is built first."""
    located = locate(dataset, dataset_dir, None)
    name, directory = located.dataset, located.dataset_dir
    if prepare and name in SYNTHETIC_SCALES and not (directory / "meta.json").exists():
        build_synthetic_dataset(name, directory)
    if name == "criteo-tb-random" and not (directory / "meta.json").exists():
        raise UserError(f"{directory}: the criteo-tb-random preset is not generated yet: run "
                        f"`dlrm-bench make-random-preset` (writes ~40 GB; uses the GPU when present)")
    meta = load_meta(directory)
    model_path = Path(model) if model else default_model_path(name)
    if prepare and name in SYNTHETIC_SCALES and model is None and not model_path.exists():
        train_synthetic_model(directory, model_path)  # only the built-in default; a named model must exist
    if not model_path.exists():
        hint = {"terabyte": "`make download_model`",
                "criteo-tb-random": "`dlrm-bench make-random-preset`"}.get(
            name, f"`make train RUN_ARGS=\"--dataset-dir {directory}\"`")
        raise UserError(f"model {model_path} not found: run {hint} or pass --model")
    return meta, model_path


def _cli(argv: list[str]) -> None:
    from dlrm_bench.cli import main as cli_main

    status = cli_main(argv)
    if status:
        raise UserError(f"`dlrm-bench {' '.join(argv)}` failed with status {status}")


def build_synthetic_dataset(name: str, directory: Path) -> None:
    """Generate the raw synthetic days (if missing) and preprocess them into `directory`."""
    raw = raw_days_dir(name)
    if not (raw / "synthetic_meta.json").exists():
        print(f"generating synthetic days ({SYNTHETIC_SCALES[name]}) into {raw} ...", flush=True)
        _cli(["generate-data", "--scale", SYNTHETIC_SCALES[name], "--output", str(raw)])
    print(f"preprocessing {raw} -> {directory} ...", flush=True)
    _cli(["preprocess", "--raw-dir", str(raw), "--output", str(directory), "--name", name])


def train_synthetic_model(directory: Path, model_path: Path) -> None:
    print(f"training the DLRM on {directory} -> {model_path} ...", flush=True)
    # the harness scores the whole test set with the FP32 reference anyway: a quick check here is enough
    _cli(["train", "--dataset-dir", str(directory), "--output", str(model_path), "--max-eval-rows", "50000"])
