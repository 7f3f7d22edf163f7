"""Import OpenAI Triton for the CUDA engine's kernels.

Without a CUDA device the kernels still run, on the CPU, through Triton's interpreter (TRITON_INTERPRET=1, set
here before Triton is imported). That is slow and only for tests on CPU-only machines; the engine itself
refuses to start without a GPU.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _interpreter_scalar_index() -> None:
    """Triton 3.6's interpreter holds runtime scalars (kernel arguments, program ids) as 1-element arrays and
    turns them into Python ints with `int(array)`, which numpy 2 refuses for arrays of rank > 0. Loops whose
    bounds are runtime values (the persistent GEMM's `tl.range(pid, tiles, NUM_SMS)`) then fail in the
    interpreter only. Re-install `tensor.__index__` to read the single element."""
    import numpy as np
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patch_lang_tensor(tensor, scope):  # type: ignore[no-untyped-def]
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))

    interpreter._patch_lang_tensor = patch_lang_tensor


if INTERPRETED:
    _interpreter_scalar_index()


ACC_EXACT_LIMIT = 1 << 22
"""|acc| <= ACC_EXACT_LIMIT: small_int_to_float converts the int32 accumulator exactly."""


@triton.jit
def small_int_to_float(acc):
    """int32 with |acc| <= 2**22 -> the same value in fp32, without a conversion instruction. The integer add of
    1.5 * 2**23's bits (0x4B400000) puts acc in the mantissa of a float in [2**23, 2**24], whose spacing is 1,
    so the float is exactly 1.5 * 2**23 + acc; the fp32 subtract is then exact too. On sm_90 that is an integer
    add and an FADD where acc.to(float32) is I2FP, a conversion-pipe instruction (a quarter or less of their
    rate)."""
    return (acc + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0


@triton.jit
def acc_to_float(acc, SMALL_ACC: tl.constexpr):
    """int32 accumulator -> fp32, exact: small_int_to_float when SMALL_ACC (the caller proved |acc| <= 2**22
    from the weights, accumulators_fit), else the conversion instruction."""
    if SMALL_ACC:
        return small_int_to_float(acc)
    return acc.to(tl.float32)


def accumulators_fit(weight: torch.Tensor, relu_inputs: bool) -> bool:
    """True when every int32 accumulator of x @ weight.T stays within +-ACC_EXACT_LIMIT. weight: int8 [N, K].
    x: any int8 (|x| <= 128: the bound is 128 * the largest row sum of |w|), or, with relu_inputs, a ReLU
    layer's requantized output in [0, 127] (then the sum lies between 127 * the row's negative weights and
    127 * its positive ones)."""
    w = weight.to(torch.int64)
    if w.numel() == 0:
        return True
    if relu_inputs:
        bound = 127 * torch.maximum(w.clamp(min=0).sum(dim=1), (-w).clamp(min=0).sum(dim=1))
    else:
        bound = 128 * w.abs().sum(dim=1)
    return int(bound.max()) <= ACC_EXACT_LIMIT


@triton.jit
def clamped_to_int8(q):
    """fp32 already clamped to [-127, 127] -> int8, rounded half to even, without conversion instructions.
    Adding 1.5 * 2**23 leaves the nearest integer (ties to even: an fp32 add's rounding) in the low mantissa
    bits, and the pattern of 1.5 * 2**23 (0x4B400000) has a zero low byte, so the low byte of the sum's bits is
    that integer in two's complement. On sm_90 this is one FADD and a byte move per element where
    round-then-convert is FRND + F2I, both on the slower conversion pipe."""
    return (q + 12582912.0).to(tl.int32, bitcast=True).to(tl.int8)


@triton.jit
def requantize(y, inv_scale):
    """int8 = clamp(round_half_even(y * inv_scale), -127, 127); y, inv_scale fp32 (broadcastable). The clamp
    comes first (its bounds are integers, so the order does not change the result), then clamped_to_int8."""
    return clamped_to_int8(tl.minimum(tl.maximum(y * inv_scale, -127.0), 127.0))


@triton.jit
def requantize_relu(y, inv_scale):
    """requantize(max(y, 0), inv_scale) for inv_scale > 0 (every activation scale): the ReLU and the lower clamp
    become one max."""
    return clamped_to_int8(tl.minimum(tl.maximum(y * inv_scale, 0.0), 127.0))


__all__ = ["triton", "tl", "INTERPRETED", "requantize", "requantize_relu", "clamped_to_int8", "small_int_to_float",
           "acc_to_float", "accumulators_fit", "ACC_EXACT_LIMIT"]
