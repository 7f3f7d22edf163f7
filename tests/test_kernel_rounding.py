"""The kernels' requantization helpers (engines/cuda/triton_env.py) against torch's round-half-even.

They replace conversion instructions with an fp32 add and bit moves, so their results must match the recipe's
`torch.round` + clamp exactly, ties and out-of-range values included. On a GPU this runs compiled; on a CPU-only
machine through Triton's interpreter.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("OpenAI Triton is not installed", allow_module_level=True)

from dlrm_bench.engines.cuda.triton_env import requantize, requantize_relu, tl, triton  # noqa: E402
from dlrm_bench.quant.recipe import requantize as recipe_requantize  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BLOCK = 1024


@triton.jit
def _conversions_kernel(y_ptr, inv_ptr, q_ptr, relu_ptr, n, BLOCK: tl.constexpr):
    """q = requantize(y, inv), relu = requantize_relu(y, inv); all [n]."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    y = tl.load(y_ptr + offs, mask=mask, other=0.0)
    inv = tl.load(inv_ptr + offs, mask=mask, other=1.0)
    tl.store(q_ptr + offs, requantize(y, inv), mask=mask)
    tl.store(relu_ptr + offs, requantize_relu(y, inv), mask=mask)


def _inputs(n_random: int) -> tuple[torch.Tensor, torch.Tensor]:
    """y and inv (> 0): every tie k + 0.5 around the int8 range, signed zeros, values far out of range and
    infinities, then random values."""
    g = torch.Generator().manual_seed(11)
    ties = torch.arange(-140, 141, dtype=torch.float32) + 0.5
    edges = torch.tensor([0.0, -0.0, 126.5, 127.0, 127.49, 127.5, 128.0, -127.5, -128.5, 1e30, -1e30,
                          float("inf"), float("-inf"), 1e-40, -1e-40, 3.0e6, -3.0e6, 5.0e6])
    rand = torch.randn(n_random, generator=g) * torch.exp(torch.randn(n_random, generator=g) * 3)
    y = torch.cat([ties, edges, rand])
    inv = torch.cat([torch.ones(ties.numel() + edges.numel()),
                     torch.exp(torch.randn(n_random, generator=g) * 2)]).float()
    return y, inv


@pytest.mark.parametrize("n_random", [1, 999, 5000])
def test_conversions_match_torch(n_random: int) -> None:
    y, inv = _inputs(n_random)
    n = y.numel()
    q = torch.zeros(n, dtype=torch.int8, device=DEVICE)
    relu = torch.zeros_like(q)
    _conversions_kernel[(triton.cdiv(n, BLOCK),)](y.to(DEVICE), inv.to(DEVICE), q, relu, n, BLOCK=BLOCK)
    torch.testing.assert_close(q.cpu(), recipe_requantize(y, inv), rtol=0, atol=0)
    torch.testing.assert_close(relu.cpu(), recipe_requantize(torch.relu(y), inv), rtol=0, atol=0)


def test_ties_round_to_even() -> None:
    """The reason for the helper's trick: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2."""
    y = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5])
    q = torch.zeros(y.numel(), dtype=torch.int8, device=DEVICE)
    relu = torch.zeros_like(q)
    _conversions_kernel[(1,)](y.to(DEVICE), torch.ones_like(y).to(DEVICE), q, relu, y.numel(), BLOCK=BLOCK)
    assert q.cpu().tolist() == [0, 2, 2, 0, -2, -2, 126]
    assert relu.cpu().tolist() == [0, 2, 2, 0, 0, 0, 126]
