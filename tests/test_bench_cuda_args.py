"""bench_cuda.py's arguments: batch lists and kernel settings (the GPU parts run on a GPU host)."""

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


def test_int_list_parses_and_refuses() -> None:
    assert bench_cuda.int_list("16384, 262144,") == [16384, 262144]
    assert bench_cuda.int_list("") == []
    for bad in ("1,x", "0", "-4"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench_cuda.int_list(bad)


def test_kernel_settings_are_applied_and_others_refused() -> None:
    settings = bench_cuda.bench_settings(False, ["top_gemm=128x128_c1x2_pingpong_fma", "bottom_kernel=cuda"])
    assert (settings.top_gemm, settings.bottom_kernel, settings.interaction_kernel) == (
        "128x128_c1x2_pingpong_fma", "cuda", "triton")
    with pytest.raises(argparse.ArgumentTypeError, match="batch_size"):
        bench_cuda.bench_settings(False, ["batch_size=5"])


def test_an_unknown_top_gemm_is_refused(monkeypatch, capsys) -> None:
    err = refusal(bench_cuda.main, ["bench_cuda.py", "--set", "top_gemm=nope"], monkeypatch, capsys)
    assert "128x128_c1x2_pingpong_fma_permuted" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_a_gpu_it_says_so(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_cuda.py", "--out", str(tmp_path)])
    assert bench_cuda.main() == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_bad_compare_value_names_compare(monkeypatch, capsys) -> None:
    argv = ["bench_cuda.py", "--sustain", "1", "--compare", "interaction_pairs_per_warp=0"]
    err = refusal(bench_cuda.main, argv, monkeypatch, capsys)
    message = err.strip().splitlines()[-1]
    assert message == ("bench_cuda.py: error: --compare: setting 'interaction_pairs_per_warp' is 0: expected an "
                       "integer from 1 to 64")
