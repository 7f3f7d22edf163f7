"""Where things live: the scratch path and the folders under it (see docs/FORMATS.md)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root (src/dlrm_bench/paths.py -> ../../)."""


def scratch_path() -> Path:
    """`$MLPERF_SCRATCH_PATH`, default `build/` in the repository root (or the working directory when installed)."""
    env = os.environ.get("MLPERF_SCRATCH_PATH")
    if env:
        return Path(env).expanduser().resolve()
    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").exists() else Path.cwd()
    return base / "build"


def raw_days_dir(dataset: str = "terabyte") -> Path:
    """Raw day files: `data/criteo/` for the real data, `data/criteo_synthetic_<scale>/` for synthetic days."""
    if dataset == "terabyte":
        return scratch_path() / "data" / "criteo"
    return scratch_path() / "data" / ("criteo_" + dataset.replace("-", "_"))


def preprocessed_dir(dataset: str) -> Path:
    """`preprocessed_data/criteo/<dataset>/`."""
    return scratch_path() / "preprocessed_data" / "criteo" / dataset


def models_dir() -> Path:
    """`models/dlrm/`: checkpoints `<model>.pt` and their derived folders `<model>/`."""
    return scratch_path() / "models" / "dlrm"


def logs_dir() -> Path:
    return scratch_path() / "logs"


def configs_dir() -> Path:
    return REPO_ROOT / "configs"
