"""bench_top_gemm.py's argument checks and its refusal without a GPU (the timing runs on the device machine)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("OpenAI Triton is not installed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_top_gemm as btg  # noqa: E402
from tests.bench_args import refusal  # noqa: E402


def test_an_unknown_variant_is_refused(monkeypatch, capsys) -> None:
    err = refusal(btg.main, ["bench_top_gemm.py", "--variants", "128x128_c1x2_pingpong,nope"], monkeypatch, capsys)
    assert "--variants: unknown ['nope']" in err and "128x128_c2x1_pingpong" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_a_gpu_it_says_so(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_top_gemm.py", "--out", str(tmp_path)])
    assert btg.main() == 2
    assert "bench_top_gemm.py: error: needs a CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
