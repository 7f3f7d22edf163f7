"""Expand a batch's samples into the test-set row of each pair, in one Triton kernel.

A batch is k samples, sample s being rows [starts[s], starts[s] + lengths[s]) of the resident test set; pair j of
the batch (0 <= j < n = sum(lengths)) reads row starts[s] + j - offsets[s], where offsets is the exclusive prefix
sum of the lengths and s the sample whose [offsets[s], offsets[s+1]) holds j. The host computes `offsets` (k is at
most a few thousand) and packs k, n, starts and offsets into one pinned buffer that crosses the bus in one copy;
each GPU thread then finds its sample by binary search. The kernel reads k and n from that buffer, so one launch
(or one recorded CUDA graph) serves any batch up to the number of rows it fills: rows past n get row 0, a valid
row whose results nobody reads. The alternative, in PyTorch (engine.py's default without CUDA graphs), is a
cumsum, a subtraction, a repeat_interleave and an add: four kernels and three allocations per batch on the
submitting thread.
"""

from __future__ import annotations

import numpy as np
import torch

from dlrm_bench.engines.cuda.triton_env import tl, triton

BLOCK = 1024
"""Pairs per program."""
HEADER = 2
"""int64 words before the starts in a packed buffer: the number of samples k, then the number of pairs n."""


def search_steps(max_samples: int) -> int:
    """Binary-search iterations that find any of `max_samples` samples (fixed per engine: one compiled kernel)."""
    return max(1, int(max_samples).bit_length())


def packed_length(num_samples: int) -> int:
    """int64 words of a packed batch of `num_samples` samples: the header, k starts and k + 1 offsets."""
    return HEADER + 2 * num_samples + 1


@triton.jit(do_not_specialize=["num_rows"])
def _expand_rows_kernel(packed_ptr, rows_ptr, num_rows, BLOCK: tl.constexpr, STEPS: tl.constexpr):
    """packed: int64 [2k + 3] = k, n, starts [k], offsets [k + 1] (offsets[0] = 0, offsets[k] = n);
    rows: int64 [num_rows] receives starts[s] + j - offsets[s] for pair j < n of sample s, and 0 for
    n <= j < num_rows."""
    j = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    num_samples = tl.load(packed_ptr).to(tl.int32)
    num_pairs = tl.load(packed_ptr + 1)
    j64 = j.to(tl.int64)
    in_batch = (j < num_rows) & (j64 < num_pairs)
    starts_ptr = packed_ptr + 2  # past the HEADER words (k, n)
    offsets_ptr = starts_ptr + num_samples
    lo = tl.zeros([BLOCK], dtype=tl.int32)  # invariant: offsets[lo] <= j < offsets[hi]
    hi = tl.zeros([BLOCK], dtype=tl.int32) + num_samples
    for _ in range(STEPS):
        mid = (lo + hi) // 2
        active = in_batch & (hi - lo > 1)
        below = tl.load(offsets_ptr + mid, mask=active, other=0) <= j64
        lo = tl.where(active & below, mid, lo)
        hi = tl.where(active & ~below, mid, hi)
    start = tl.load(starts_ptr + lo, mask=in_batch, other=0)
    first = tl.load(offsets_ptr + lo, mask=in_batch, other=0)
    tl.store(rows_ptr + j64, tl.where(in_batch, start + j64 - first, 0), mask=j < num_rows)


def pack_ranges(starts: np.ndarray, ends: np.ndarray, out: np.ndarray) -> int:
    """Write k, n, the starts [k] and the exclusive prefix offsets [k + 1] into out (int64, at least
    packed_length(k) long); returns n, the number of pairs."""
    k = len(starts)
    out[0] = k
    out[HEADER:HEADER + k] = starts
    offsets = out[HEADER + k:HEADER + 2 * k + 1]
    offsets[0] = 0
    np.cumsum(ends - starts, out=offsets[1:])
    out[1] = offsets[k]
    return int(out[1])


def expand_rows(packed: torch.Tensor, rows: torch.Tensor, num_rows: int, steps: int) -> None:
    """Launch on the current stream: packed int64 (pack_ranges' layout) on the device -> rows int64
    [>= num_rows], the first num_rows written. `steps` from search_steps(the most samples a batch can hold)."""
    grid = (triton.cdiv(num_rows, BLOCK),)
    _expand_rows_kernel[grid](packed, rows, num_rows, BLOCK=BLOCK, STEPS=steps)
