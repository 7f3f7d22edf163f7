"""Inference engines behind one interface (`base.Engine`), picked by name.

Each engine module exposes `build(model_path, meta, settings) -> Engine` (settings: `dlrm_bench.settings.Settings`).
Modules are imported only when asked for, so a CPU machine never imports Triton.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from dlrm_bench.criteo.dataset import DatasetMeta
from dlrm_bench.engines.base import Engine
from dlrm_bench.errors import UserError
from dlrm_bench.settings import Settings

ENGINE_MODULES = {
    "reference": "dlrm_bench.engines.reference",
    "cpu": "dlrm_bench.engines.cpu",
    "cuda": "dlrm_bench.engines.cuda",
}


def default_engine() -> str:
    """The fastest engine this machine has: cuda with a GPU, else cpu (int8), else the reference."""
    import torch

    if torch.cuda.is_available() and engine_available("cuda"):
        return "cuda"
    return "cpu" if engine_available("cpu") else "reference"


def engine_available(name: str) -> bool:
    try:
        importlib.import_module(ENGINE_MODULES[name])
        return True
    except ImportError:
        return False


def pick_engine(requested: str | None, configured: str) -> str:
    """--engine wins; else the configured engine if this machine has it; else the fastest it has (said in a line)."""
    if requested:
        return requested
    if configured and engine_available(configured):
        return configured
    fallback = default_engine()
    if configured:
        print(f"engine '{configured}' from the config is not available here; using '{fallback}'", flush=True)
    return fallback


def create_engine(name: str, model_path: Path, meta: DatasetMeta, settings: Settings | None = None) -> Engine:
    """Build engine `name` for the model at `model_path` and the dataset described by `meta`."""
    if name not in ENGINE_MODULES:
        raise UserError(f"unknown engine '{name}': choose one of {', '.join(ENGINE_MODULES)}")
    try:
        module = importlib.import_module(ENGINE_MODULES[name])
    except ImportError as exc:
        raise UserError(f"engine '{name}' is not available on this machine: {exc}") from None
    return module.build(Path(model_path), meta, settings or Settings())
