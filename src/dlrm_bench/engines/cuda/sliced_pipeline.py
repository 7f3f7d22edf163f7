"""One batch's kernels pipelined over slices of its pairs, so the memory-bound front overlaps the top MLP.

The front (bottom MLP, then the embedding gather + interaction) mostly waits on HBM; the top MLP's GEMMs mostly
wait on the tensor cores. Run one after the other, each leaves the other's unit idle. Here the batch's pairs are
cut into `slices` ranges: a front stream runs the front of slice 0, 1, 2, ... back to back, and a top stream runs
the top MLP of slice k as soon as slice k's front is done, beside the front of slice k + 1. The top stream has the
higher priority, so its GEMM's persistent CTAs take SMs as the short front CTAs retire. With the GEMM held to
fewer SMs than the GPU has (the engine's `top_gemm_sms`), the rest keep running the front.

Both streams fork from the current stream and join it again, so a caller (and a CUDA graph being captured on the
current stream) sees one batch: nothing after it starts before both branches are done. The slices are disjoint
rows of the same buffers, so the result is the same as the serial order's.
"""

from __future__ import annotations

from typing import Callable

import torch

SLICE_ALIGN = 256
"""Slice boundaries are multiples of this many pairs (whole GEMM row tiles)."""
MIN_SLICE_PAIRS = 16384
"""Fewer slices for small batches: no slice below this many pairs (a GEMM that small cannot fill the GPU)."""

RangeFn = Callable[[int, int], None]
"""(lo, hi) -> launch a stage's kernels for pairs lo..hi-1 on the current stream."""


def slice_bounds(n: int, slices: int, align: int = SLICE_ALIGN, min_pairs: int | None = None
                 ) -> list[tuple[int, int]]:
    """[(lo, hi)] covering 0..n in at most `slices` ranges of near-equal size, inner boundaries multiples of
    `align`, none (but a lone one) under `min_pairs` (default MIN_SLICE_PAIRS, read at each call)."""
    if n < 1:
        raise ValueError(f"slice_bounds: n must be positive, got {n}")
    min_pairs = MIN_SLICE_PAIRS if min_pairs is None else min_pairs
    count = max(1, min(slices, n // min_pairs))
    cuts = [0]
    for k in range(1, count):
        cut = (n * k // count) // align * align
        if cut > cuts[-1]:
            cuts.append(cut)
    cuts.append(n)
    return list(zip(cuts, cuts[1:]))


class SlicedPipeline:
    """Runs front(lo, hi) and top(lo, hi) over the slices of a batch on two forked streams (module docstring)."""

    def __init__(self, device: torch.device, slices: int, top_high_priority: bool = True) -> None:
        if slices < 1:
            raise ValueError(f"slices must be at least 1, got {slices}")
        self.slices = slices
        self.front_stream = torch.cuda.Stream(device)
        self.top_stream = torch.cuda.Stream(device, priority=-1 if top_high_priority else 0)

    def __call__(self, front: RangeFn, top: RangeFn, n: int) -> None:
        """Enqueue the batch of n pairs after the current stream's work; the current stream waits for all of it."""
        bounds = slice_bounds(n, self.slices)
        if len(bounds) == 1:
            front(0, n)
            top(0, n)
            return
        main = torch.cuda.current_stream()
        self.front_stream.wait_stream(main)
        self.top_stream.wait_stream(main)
        fronts_done = []
        with torch.cuda.stream(self.front_stream):
            for lo, hi in bounds:
                front(lo, hi)
                event = torch.cuda.Event()
                event.record(self.front_stream)
                fronts_done.append(event)
        with torch.cuda.stream(self.top_stream):
            for (lo, hi), event in zip(bounds, fronts_done):
                self.top_stream.wait_event(event)
                top(lo, hi)
        main.wait_stream(self.front_stream)
        main.wait_stream(self.top_stream)
