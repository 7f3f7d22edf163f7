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


__all__ = ["triton", "tl", "INTERPRETED", "requantize", "requantize_relu", "clamped_to_int8"]
