"""Row access frequencies of the embedding tables: `row_frequencies.bin` (docs/FORMATS.md).

Layout (little-endian): int32 T (table count), then per table t: int32 R_t (rows), float32 counts [R_t] = how
many times row r of table t is looked up over the training days (all days but the last). The hot/cold embedding
store sorts rows by these counts.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from dlrm_bench.atomic import atomic_path
from dlrm_bench.errors import DataError

_DENSE_BINCOUNT_FACTOR = 4
"""np.bincount (allocates minlength) when the table is at most this many times the batch; np.add.at otherwise."""


class FrequencyCounter:
    """Accumulates per-table lookup counts, `dtype` [cardinality_t] each (int64 by default; int32 halves the
    memory when fewer than 2**31 rows are counted), from batches of ids int [n, T]."""

    def __init__(self, cardinalities: Sequence[int], dtype: type = np.int64) -> None:
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.counts = [np.zeros(c, dtype=dtype) for c in self.cardinalities]

    def add(self, ids: np.ndarray) -> None:
        """Count one batch: ids int [n, T], 0 <= ids[:, t] < cardinality_t."""
        n = ids.shape[0]
        for t, card in enumerate(self.cardinalities):
            col = ids[:, t]
            if card <= _DENSE_BINCOUNT_FACTOR * n:
                self.counts[t] += np.bincount(col, minlength=card)
            else:
                np.add.at(self.counts[t], col, 1)

    def merge(self, other: Sequence[np.ndarray]) -> None:
        """Add counts of another counter (same cardinalities)."""
        for mine, theirs in zip(self.counts, other, strict=True):
            mine += theirs


def write_row_frequencies(path: Path, counts: Sequence[np.ndarray]) -> str:
    """Write `row_frequencies.bin` atomically from per-table counts (any numeric dtype). Returns its blake2b digest."""
    digest = hashlib.blake2b(digest_size=16)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for part in _encoded(counts):
            f.write(part)
            digest.update(part)
    return digest.hexdigest()


def _encoded(counts: Sequence[np.ndarray]):
    yield np.array([len(counts)], dtype="<i4").tobytes()
    for c in counts:
        yield np.array([c.shape[0]], dtype="<i4").tobytes()
        yield np.ascontiguousarray(c, dtype="<f4").tobytes()


def read_row_frequencies(path: Path) -> list[np.ndarray]:
    """Read `row_frequencies.bin` -> per table float32 [R_t]; a truncated or malformed file is a DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found (run `make preprocess_data` to create it)")
    raw = np.fromfile(path, dtype=np.uint8)
    size = raw.size
    if size < 4:
        raise DataError(f"{path}: truncated row_frequencies.bin ({size} bytes)")
    tables = int(raw[:4].view("<i4")[0])
    out: list[np.ndarray] = []
    offset = 4
    for t in range(tables):
        if offset + 4 > size:
            raise DataError(f"{path}: truncated at table {t} of {tables}")
        rows = int(raw[offset:offset + 4].view("<i4")[0])
        offset += 4
        end = offset + 4 * rows
        if rows < 0 or end > size:
            raise DataError(f"{path}: table {t} claims {rows} rows but the file ends at byte {size}")
        out.append(raw[offset:end].view("<f4").astype(np.float32))
        offset = end
    if offset != size:
        raise DataError(f"{path}: {size - offset} unexpected bytes after {tables} tables")
    return out


def hottest_rows(frequencies: Sequence[np.ndarray], part: float) -> np.ndarray:
    """Sorted global row ids int64 [ceil(part * R)]: the rows with the highest normalised frequency (ties: lower id).

    The ranking of the hot/cold stores (CPU and CUDA engines). Found with a partition instead of a full sort: two
    float32 [R] arrays at the peak instead of a sort's ~5 GB for the full model.
    """
    total_rows = sum(int(f.shape[0]) for f in frequencies)
    scores = np.empty(total_rows, dtype=np.float32)
    at = 0
    for counts in frequencies:
        total = float(np.sum(counts, dtype=np.float64))
        part_scores = scores[at:at + counts.shape[0]]
        if total > 0:
            np.divide(counts, np.float32(total), out=part_scores, dtype=np.float32)
        else:
            part_scores[:] = 0.0
        at += counts.shape[0]
    keep = min(math.ceil(part * total_rows), total_rows)
    if keep == 0:
        return np.empty(0, dtype=np.int64)
    if keep == total_rows:
        return np.arange(total_rows, dtype=np.int64)
    threshold = np.partition(scores, total_rows - keep)[total_rows - keep]  # the keep-th largest score
    above = np.flatnonzero(scores > threshold)
    ties = np.flatnonzero(scores == threshold)[:keep - above.size]
    return np.sort(np.concatenate([above, ties])).astype(np.int64, copy=False)
