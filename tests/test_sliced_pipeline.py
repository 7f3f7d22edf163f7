"""Slice boundaries of the sliced pipeline (engines/cuda/sliced_pipeline.py); the engine's sliced batches are
checked against the serial ones on a GPU in test_cuda_engine.py."""

from __future__ import annotations

import pytest

from dlrm_bench.engines.cuda.sliced_pipeline import slice_bounds


@pytest.mark.parametrize("n", [1, 255, 16383, 16384, 40000, 65537, 262144, 262143])
@pytest.mark.parametrize("slices", [1, 2, 3, 4, 8])
def test_slices_cover_the_batch_in_aligned_steps(n: int, slices: int) -> None:
    bounds = slice_bounds(n, slices)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(hi0 == lo1 for (_, hi0), (lo1, _) in zip(bounds, bounds[1:]))
    assert all(lo < hi for lo, hi in bounds)
    assert all(lo % 256 == 0 for lo, _ in bounds)
    assert len(bounds) <= slices
    if len(bounds) > 1:
        assert min(hi - lo for lo, hi in bounds) >= 16384 - 256


def test_slices_are_near_equal_and_small_batches_stay_whole() -> None:
    assert slice_bounds(262144, 4) == [(0, 65536), (65536, 131072), (131072, 196608), (196608, 262144)]
    assert slice_bounds(20000, 4) == [(0, 20000)]  # no slice under 16,384 pairs
    assert slice_bounds(1000, 3, min_pairs=256) == [(0, 256), (256, 512), (512, 1000)]


def test_a_batch_needs_pairs() -> None:
    with pytest.raises(ValueError, match="n must be positive"):
        slice_bounds(0, 2)
