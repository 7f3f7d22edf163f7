"""Where the CPU engine reads its int8 embedding rows: through a read-only memory map of the .bin file, with an
optional hot part copied into RAM (the CPU side of the CUDA engine's hot/cold store, engines/cuda/table_store.py).

`embedding_weights_in_ram_part` = p:

* 0 (default): every row is read through the memory map of `dlrm_embedding_weights_int8_v3.bin` (quant/tables.py
  maps it read-only). Nothing is copied: the kernel's page cache holds the pages that lookups touch and drops the
  least used ones under memory pressure, so a model larger than the free RAM (the full 24 GB model on a 24 GB
  machine) runs, at the speed of its page-cache misses. The map is advised MADV_RANDOM: a miss reads its 4 KiB
  page, not the 128 KiB readahead window (which would fill the cache with 31 pages that no lookup asked for).
* 0 < p < 1: the ceil(p * R) rows with the highest normalised access frequency (`row_frequencies.bin`: each table's
  counts divided by its total, ties to the lower global row id, as the CUDA store ranks them) are copied into an
  anonymous array, and `remap` (int32 [R], 4 bytes a row: 751 MB for the full model) sends a global row id to its
  place there (>= 0) or to the memory map (-1). Cold rows stay where they are in the file.
* 1: every row is copied into RAM (the file's size in anonymous memory).

The same bytes are read in every case, so predictions are bit-identical. Building a hot part streams the file
once with plain reads (not through the map, so its pages are not charged to the process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from dlrm_bench.criteo.frequencies import hottest_rows, read_row_frequencies
from dlrm_bench.errors import UserError
from dlrm_bench.quant.tables import advise_random

SETTING = "embedding_weights_in_ram_part"
CHUNK_ROWS = 1 << 20
"""Rows per streamed chunk while copying rows into RAM (128 MiB)."""


@dataclass
class CpuTableStore:
    """tables: int8 [R, 128] (the memory map, or an in-memory array); hot: int8 [H, 128] or None; remap: int32 [R]
    (row of `hot`, or -1 for `tables`) or None when every row is read from `tables`."""

    tables: np.ndarray
    hot: np.ndarray | None = None
    remap: np.ndarray | None = None
    ram_part: float = 0.0

    @property
    def kind(self) -> str:
        if self.remap is not None:
            return "hot/cold"
        return "memory map" if isinstance(self.tables, np.memmap) else "ram"

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Global row ids int64 [n] -> int8 [n, 128] (the torch path's gather)."""
        if self.remap is None:
            return np.take(self.tables, rows, axis=0)
        place = self.remap[rows]
        hot = place >= 0
        out = np.empty((rows.shape[0], self.tables.shape[1]), dtype=np.int8)
        out[hot] = self.hot[place[hot]]
        out[~hot] = np.take(self.tables, rows[~hot], axis=0)
        return out

    def ram_lookup_fraction(self, categorical: np.ndarray, offsets: np.ndarray) -> float:
        """Fraction of the lookups of `categorical` (int [N, 26]) served from anonymous RAM (not the map)."""
        if self.remap is None:
            return 0.0 if isinstance(self.tables, np.memmap) else 1.0
        hits, total = 0, 0
        for lo in range(0, categorical.shape[0], 1 << 20):
            rows = np.asarray(categorical[lo:lo + (1 << 20)], dtype=np.int64) + offsets[None, :]
            hits += int(np.count_nonzero(self.remap[rows] >= 0))
            total += rows.size
        return hits / max(total, 1)


def _chunks(tables: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, int8 [n, 128]) over all rows: a memory map is read with plain file reads, chunk by chunk."""
    filename = getattr(tables, "filename", None)
    if not isinstance(tables, np.memmap) or filename is None:
        for lo in range(0, tables.shape[0], CHUNK_ROWS):
            yield lo, np.asarray(tables[lo:lo + CHUNK_ROWS])
        return
    width = tables.shape[1]
    buf = np.empty((CHUNK_ROWS, width), dtype=np.int8)
    with open(filename, "rb", buffering=0) as f:
        f.seek(int(tables.offset))
        for lo in range(0, tables.shape[0], CHUNK_ROWS):
            n = min(CHUNK_ROWS, tables.shape[0] - lo)
            view = memoryview(buf[:n]).cast("B")
            got = 0
            while got < view.nbytes:
                step = f.readinto(view[got:])
                if not step:
                    raise UserError(f"{filename}: ended early while reading rows {lo}..{lo + n}")
                got += step
            yield lo, buf[:n]


def copy_rows(tables: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """int8 [len(rows), 128] (rows sorted; None = every row) copied into anonymous memory, streaming the table."""
    count = tables.shape[0] if rows is None else rows.shape[0]
    out = np.empty((count, tables.shape[1]), dtype=np.int8)
    for lo, chunk in _chunks(tables):
        hi = lo + chunk.shape[0]
        if rows is None:
            out[lo:hi] = chunk
            continue
        a, b = np.searchsorted(rows, [lo, hi])
        if b > a:
            out[a:b] = chunk[rows[a:b] - lo]
    return out


def build_store(tables: np.ndarray, part: float, frequencies_file: Path | None = None,
                cardinalities: Sequence[int] | None = None) -> CpuTableStore:
    """The store for `embedding_weights_in_ram_part` = part (see the module docstring)."""
    part = float(part)
    if not 0.0 <= part <= 1.0:
        raise UserError(f"{SETTING} must be in [0, 1], got {part}")
    if part >= 1.0:
        return CpuTableStore(copy_rows(tables), ram_part=1.0)
    advise_random(tables)
    if part == 0.0:
        return CpuTableStore(tables)
    if frequencies_file is None or not Path(frequencies_file).exists():
        raise UserError(f"{SETTING}={part} needs row_frequencies.bin ({frequencies_file}); "
                        f"run `make preprocess_data`")
    freqs = read_row_frequencies(frequencies_file)
    sizes = [len(f) for f in freqs]
    if (cardinalities is not None and sizes != [int(c) for c in cardinalities]) or sum(sizes) != tables.shape[0]:
        raise UserError(f"{frequencies_file}: table sizes {sizes[:3]}... do not match the model's "
                        f"{list(cardinalities or [])[:3]}... ({tables.shape[0]} rows)")
    ids = hottest_rows(freqs, part)
    del freqs
    remap = np.full(tables.shape[0], -1, dtype=np.int32)
    remap[ids] = np.arange(ids.shape[0], dtype=np.int32)
    hot = copy_rows(tables, ids)
    return CpuTableStore(tables, hot, remap, ram_part=ids.shape[0] / max(tables.shape[0], 1))
