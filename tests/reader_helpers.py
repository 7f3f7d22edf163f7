"""What the raw-day reader tests share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlrm_bench.criteo.reader import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_IND_RANGE, DayReader, RawChunk, ReadStats
from dlrm_bench.criteo.schema import NUM_DENSE, NUM_SPARSE


def read_day(path: Path, max_ind_range: int = DEFAULT_MAX_IND_RANGE, *, skip_bad_rows: bool = False,
             chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[RawChunk, ReadStats]:
    """Read a whole (small) day file into one RawChunk. Use DayReader for large files."""
    reader = DayReader(path, max_ind_range, chunk_bytes=chunk_bytes, skip_bad_rows=skip_bad_rows)
    chunks = list(reader)
    if not chunks:
        empty = RawChunk(np.zeros(0, np.uint8), np.zeros((0, NUM_DENSE), np.int32),
                         np.zeros((0, NUM_SPARSE), np.int32), 1, 0)
        return empty, reader.stats
    return RawChunk(np.concatenate([c.labels for c in chunks]), np.concatenate([c.counts for c in chunks]),
                    np.concatenate([c.sparse for c in chunks]), 1, sum(c.nbytes for c in chunks)), reader.stats
