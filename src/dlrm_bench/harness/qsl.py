"""The query sample library: one LoadGen sample = one user = a contiguous range of pairs of the test split."""

from __future__ import annotations

import mmap
from typing import Sequence

import mlperf_loadgen as lg
import numpy as np

from dlrm_bench.criteo.dataset import Split

PAGE = mmap.PAGESIZE


class SampleLibrary:
    """Samples over `split` with boundaries `offsets` (int [S + 1], from sample_partition.npy).

    Loading is memory-mapped: `load` only asks the kernel to read the samples' pages ahead (madvise WILLNEED);
    no array is copied. Engines that keep the test set on a device copy it once in `Engine.load`.
    """

    def __init__(self, split: Split, offsets: np.ndarray, performance_sample_count: int) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        self.split = split
        self.starts = offsets[:-1]
        self.ends = offsets[1:]
        self.lengths = self.ends - self.starts
        self.performance_sample_count = min(performance_sample_count, len(self.starts))
        self.loaded = 0
        self.handle = None

    @property
    def total_samples(self) -> int:
        return int(len(self.starts))

    @property
    def mean_pairs_per_sample(self) -> float:
        return float(self.lengths.mean())

    def load_samples(self, indices: Sequence[int]) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size:
            self._prefetch(idx)
        self.loaded += int(idx.size)

    def unload_samples(self, indices: Sequence[int]) -> None:
        self.loaded -= len(indices)

    def _prefetch(self, idx: np.ndarray) -> None:
        """Read ahead the row span the samples cover in every input array (one madvise per array)."""
        lo, hi = int(self.starts[idx].min()), int(self.ends[idx].max())
        for array in (self.split.numeric, self.split.categorical):
            _advise_rows(array, lo, hi)

    def __enter__(self) -> "SampleLibrary":
        self.handle = lg.ConstructQSL(self.total_samples, self.performance_sample_count,
                                      self.load_samples, self.unload_samples)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            lg.DestroyQSL(self.handle)
            self.handle = None


def _advise_rows(array: np.ndarray, lo: int, hi: int) -> None:
    """madvise(WILLNEED) the bytes of rows [lo, hi) of a memory-mapped array; a no-op for in-memory arrays."""
    base = getattr(array, "_mmap", None)
    if not isinstance(base, mmap.mmap):
        return
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.itemsize
    header = int(getattr(array, "offset", 0)) % mmap.ALLOCATIONGRANULARITY
    begin = (header + lo * row_bytes) // PAGE * PAGE
    length = header + hi * row_bytes - begin
    try:
        base.madvise(mmap.MADV_WILLNEED, begin, min(length, len(base) - begin))
    except (OSError, ValueError):
        pass
