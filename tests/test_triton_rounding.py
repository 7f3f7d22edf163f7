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

from dlrm_bench.engines.cuda.triton_env import (ACC_EXACT_LIMIT, accumulators_fit, requantize,  # noqa: E402
                                                requantize_relu, small_int_to_float, tl, triton)
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


@triton.jit
def _small_int_kernel(acc_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out = small_int_to_float(acc); [n]."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, small_int_to_float(tl.load(acc_ptr + offs, mask=mask, other=0)), mask=mask)


def test_small_int_to_float_is_exact_to_the_limit() -> None:
    """Every int32 in [-2**22, 2**22] comes out as the same value; the ends and their neighbours included."""
    g = torch.Generator().manual_seed(12)
    edges = torch.tensor([0, 1, -1, 2, -2, 255, -256, 65535, -65536, ACC_EXACT_LIMIT, -ACC_EXACT_LIMIT,
                          ACC_EXACT_LIMIT - 1, -ACC_EXACT_LIMIT + 1], dtype=torch.int32)
    acc = torch.cat([edges, torch.randint(-ACC_EXACT_LIMIT, ACC_EXACT_LIMIT + 1, (5000,), generator=g,
                                          dtype=torch.int32)])
    out = torch.empty(acc.numel(), dtype=torch.float32, device=DEVICE)
    _small_int_kernel[(triton.cdiv(acc.numel(), BLOCK),)](acc.to(DEVICE), out, acc.numel(), BLOCK=BLOCK)
    assert torch.equal(out.cpu(), acc.float())


def test_small_int_to_float_is_wrong_past_the_limit() -> None:
    """Why accumulators_fit exists: one past the limit the trick no longer gives the value."""
    acc = torch.tensor([ACC_EXACT_LIMIT + 1, -ACC_EXACT_LIMIT - 1], dtype=torch.int32)
    out = torch.empty(2, dtype=torch.float32, device=DEVICE)
    _small_int_kernel[(1,)](acc.to(DEVICE), out, 2, BLOCK=BLOCK)
    assert not torch.equal(out.cpu(), acc.float())


def _worst_accumulators(w: torch.Tensor, relu_inputs: bool) -> torch.Tensor:
    """The largest |x @ w.T| over the allowed inputs, per row: x at the end of its range matching each sign."""
    w = w.to(torch.int64)
    if relu_inputs:
        return torch.maximum((127 * w.clamp(min=0)).sum(1), (127 * (-w).clamp(min=0)).sum(1))
    return torch.maximum((128 * (-w).clamp(min=0) + 127 * w.clamp(min=0)).sum(1),
                         (128 * w.clamp(min=0) + 127 * (-w).clamp(min=0)).sum(1))


@pytest.mark.parametrize("relu_inputs", [False, True])
def test_accumulators_fit_is_a_bound_and_tight(relu_inputs: bool) -> None:
    """Weights whose worst-case row comes within one input step of the limit fit; one more unit of weight does
    not, and then some input really overflows (for all-positive rows the bound is attained)."""
    per = 128 if not relu_inputs else 127
    k = -(-ACC_EXACT_LIMIT // (per * 127))  # columns of 127 that pass the limit
    w = torch.full((3, k), 127, dtype=torch.int8)
    w[:, -1] = 0
    spare = ACC_EXACT_LIMIT // per - 127 * (k - 1)
    w[1, -1] = spare  # row 1 sits at the limit (or just under when per does not divide it)
    assert accumulators_fit(w, relu_inputs)
    assert int(_worst_accumulators(w, relu_inputs).max()) <= ACC_EXACT_LIMIT
    w[1, -1] = spare + 1
    assert not accumulators_fit(w, relu_inputs)
    assert int(_worst_accumulators(w, relu_inputs).max()) > ACC_EXACT_LIMIT  # all positive: the bound is met


def test_relu_inputs_bound_counts_one_sign() -> None:
    """Non-negative inputs: positive and negative weights never add up in one accumulator, so a row of
    +127 and -127 halves fits where the signed bound would not."""
    k = 2 * (ACC_EXACT_LIMIT // (127 * 127))
    w = torch.full((1, k), 127, dtype=torch.int8)
    w[0, k // 2:] = -127
    assert accumulators_fit(w, relu_inputs=True)
    assert not accumulators_fit(w, relu_inputs=False)
