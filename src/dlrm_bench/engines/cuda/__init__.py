"""The CUDA engine (OpenAI Triton kernels). `build` is the factory entry point (engines/__init__.py).

One visible GPU: a CudaEngine. Several (CUDA_VISIBLE_DEVICES respected): a MultiGpuEngine with one CudaEngine
per GPU, unless the setting `gpus` asks for fewer.
"""

from __future__ import annotations

from pathlib import Path

from dlrm_bench.criteo.dataset import DatasetMeta
from dlrm_bench.engines.base import Engine
from dlrm_bench.errors import UserError
from dlrm_bench.settings import Settings


def build(model_path: Path, meta: DatasetMeta, settings: Settings) -> Engine:
    import torch

    if not torch.cuda.is_available():
        raise UserError("the cuda engine needs a CUDA GPU and none is visible (use --engine=cpu or reference)")
    from dlrm_bench.engines.cuda.engine import CudaEngine
    from dlrm_bench.engines.cuda.multi import MultiGpuEngine
    from dlrm_bench.quant.artifacts import load_int8_model

    visible = torch.cuda.device_count()
    gpus = min(settings.gpus or visible, visible)
    model = load_int8_model(model_path, meta)
    frequencies = meta.directory / "row_frequencies.bin"
    if gpus > 1:
        return MultiGpuEngine(model, settings, gpus, frequencies_file=frequencies)
    return CudaEngine(model, settings, frequencies_file=frequencies)
