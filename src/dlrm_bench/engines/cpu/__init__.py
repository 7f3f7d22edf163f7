"""The CPU engine (int8 recipe on oneDNN GEMMs and a native interaction kernel). `build` is the factory entry
point (engines/__init__.py); the design notes are in engine.py."""

from __future__ import annotations

from pathlib import Path

from dlrm_bench.criteo.dataset import DatasetMeta
from dlrm_bench.engines.base import Engine
from dlrm_bench.settings import Settings


def build(model_path: Path, meta: DatasetMeta, settings: Settings) -> Engine:
    """Split files and calibration cache (built on first use), then the engine with `settings`."""
    from dlrm_bench.engines.cpu.engine import CpuEngine
    from dlrm_bench.quant.artifacts import load_int8_model

    frequencies = meta.directory / "row_frequencies.bin"
    return CpuEngine(load_int8_model(model_path, meta), settings, frequencies_file=frequencies)
