"""bench_cuda.py's argument types and hidden-layer presets (the GPU parts run on the device machine)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("OpenAI Triton is not installed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_cuda  # noqa: E402
from tests.bench_args import refusal  # noqa: E402
from tests.quant_fixtures import random_quantized  # noqa: E402


def test_int_list_parses_and_refuses() -> None:
    assert bench_cuda.int_list("16384, 262144,") == [16384, 262144]
    assert bench_cuda.int_list("") == []
    for bad in ("1,x", "0", "-4"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_cuda.int_list(bad)


def test_hidden_layer_presets_change_only_the_hidden_layers() -> None:
    _, qm, _, _ = random_quantized(3, [10] * 26)
    assert bench_cuda.hidden_layer_preset("default", qm, torch.device("cpu")) is None
    for name, tile in bench_cuda.HIDDEN_LAYER_PRESETS.items():
        configs = bench_cuda.hidden_layer_preset(name, qm, torch.device("cpu"))
        assert len(configs) == 4
        for cfg in configs[:3]:
            assert (cfg.block_m, cfg.block_n, cfg.block_k, cfg.programs_per_sm) == (
                tile["block_m"], tile["block_n"], tile["block_k"], tile["programs_per_sm"])
            assert cfg.tma and cfg.tma_store and cfg.epilogue == "folded"
        assert not configs[3].tma_store  # the final layer keeps its default


def test_cutlass_final_needs_a_cutlass_top_gemm(monkeypatch, capsys) -> None:
    err = refusal(bench_cuda.main, ["bench_cuda.py", "--cutlass-final"], monkeypatch, capsys)
    assert "--cutlass-final needs a CUTLASS --top-gemm" in err


def test_an_unknown_top_gemm_is_refused(monkeypatch, capsys) -> None:
    err = refusal(bench_cuda.main, ["bench_cuda.py", "--top-gemm", "nope"], monkeypatch, capsys)
    assert "128x128_c1x2_pingpong" in err
