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


if INTERPRETED:
    @triton.jit
    def round_half_even(x):
        """Round fp32 to the nearest integer, ties to even (as torch.round), with basic operations only
        (the interpreter has no libdevice)."""
        r = tl.floor(x)
        d = x - r
        odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
        return tl.where((d > 0.5) | ((d == 0.5) & odd), r + 1.0, r)
else:
    from triton.language.extra import libdevice

    @triton.jit
    def round_half_even(x):
        """Round fp32 to the nearest integer, ties to even (one cvt.rni instruction)."""
        return libdevice.rint(x)


@triton.jit
def requantize(y, inv_scale):
    """int8 = clamp(round_half_even(y * inv_scale), -127, 127); y, inv_scale fp32 (broadcastable)."""
    q = round_half_even(y * inv_scale)
    return tl.minimum(tl.maximum(q, -127.0), 127.0).to(tl.int8)


__all__ = ["triton", "tl", "INTERPRETED", "round_half_even", "requantize"]
