"""Expand a batch's samples into the test-set row of each pair, in one Triton kernel.

A batch is k samples, sample s being rows [starts[s], starts[s] + lengths[s]) of the resident test set; pair j of
the batch (0 <= j < n = sum(lengths)) reads row starts[s] + j - offsets[s], where offsets is the exclusive prefix
sum of the lengths and s the sample whose [offsets[s], offsets[s+1]) holds j. The host computes `offsets` (k is at
most a few thousand) and packs starts and offsets into one pinned buffer that crosses the bus in one copy; each
GPU thread then finds its sample by binary search. The alternative, in PyTorch (engine.py's default), is a cumsum,
a subtraction, a repeat_interleave and an add: four kernels and three allocations per batch on the submitting
thread.
"""

from __future__ import annotations

import numpy as np
import torch

from dlrm_bench.engines.cuda.triton_env import tl, triton

BLOCK = 1024
"""Pairs per program."""


def search_steps(max_samples: int) -> int:
    """Binary-search iterations that find any of `max_samples` samples (fixed per engine: one compiled kernel)."""
    return max(1, int(max_samples).bit_length())


@triton.jit(do_not_specialize=["num_samples", "num_pairs"])
def _expand_rows_kernel(packed_ptr, num_samples, rows_ptr, num_pairs, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    """packed: int64 [2k + 1] = starts [k], then offsets [k + 1] (offsets[0] = 0, offsets[k] = num_pairs);
    rows: int64 [num_pairs] receives starts[s] + j - offsets[s] for pair j of sample s."""
    j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = j < num_pairs
    j64 = j.to(tl.int64)
    lo = tl.zeros([BLOCK], dtype=tl.int32)  # invariant: offsets[lo] <= j < offsets[hi]
    hi = tl.zeros([BLOCK], dtype=tl.int32) + num_samples
    offsets_ptr = packed_ptr + num_samples
    for _ in range(STEPS):
        mid = (lo + hi) // 2
        active = mask & (hi - lo > 1)
        below = tl.load(offsets_ptr + mid, mask=active, other=0) <= j64
        lo = tl.where(active & below, mid, lo)
        hi = tl.where(active & ~below, mid, hi)
    start = tl.load(packed_ptr + lo, mask=mask, other=0)
    first = tl.load(offsets_ptr + lo, mask=mask, other=0)
    tl.store(rows_ptr + j64, start + j64 - first, mask=mask)


def pack_ranges(starts: np.ndarray, ends: np.ndarray, out: np.ndarray) -> int:
    """Write starts [k] then the exclusive prefix offsets [k + 1] into out (int64, at least 2k + 1 long);
    returns the number of pairs."""
    k = len(starts)
    out[:k] = starts
    out[k] = 0
    np.cumsum(ends - starts, out=out[k + 1:2 * k + 1])
    return int(out[2 * k])


def expand_rows(packed: torch.Tensor, num_samples: int, rows: torch.Tensor, num_pairs: int, steps: int) -> None:
    """Launch on the current stream: packed int64 [2k + 1] on the device (pack_ranges' layout) -> rows int64
    [>= num_pairs]. `steps` from search_steps(the most samples a batch can hold)."""
    grid = (triton.cdiv(num_pairs, BLOCK),)
    _expand_rows_kernel[grid](packed, num_samples, rows, num_pairs, BLOCK=BLOCK, STEPS=steps)
