"""The CUDA engine (OpenAI Triton kernels). `build` is the factory entry point (engines/__init__.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrm_bench.criteo.dataset import DatasetMeta
from dlrm_bench.engines.base import Engine
from dlrm_bench.errors import UserError


def build(model_path: Path, meta: DatasetMeta, settings: dict[str, Any]) -> Engine:
    import torch

    if not torch.cuda.is_available():
        raise UserError("the cuda engine needs a CUDA GPU and none is visible (use --engine=cpu or reference)")
    from dlrm_bench.engines.cuda.engine import CudaEngine
    from dlrm_bench.quant.artifacts import load_int8_model

    return CudaEngine(load_int8_model(model_path, meta), settings)
