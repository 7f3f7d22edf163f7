"""INT8 embedding tables in NVIDIA's `dlrm_embedding_weights_int8_v3.bin` format.

Layout (little endian): int32 T (table count); float32 scale[T]; then table 0's rows, table 1's rows, ...
each row 128 int8 values, row-major. scale_t = max|W_t| / 127.5; q = clamp(round_half_even(W / scale_t), -127,
127). Row counts are not stored: they are the dataset's cardinalities, and the file size must agree with them.

Splitting a checkpoint streams each table in chunks from the memory-mapped checkpoint (one pass for the maxima,
one for the rows), so a 96 GB checkpoint is never held twice in RAM; the file is written under a temporary name
and renamed when complete.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

from dlrm_bench.atomic import atomic_path
from dlrm_bench.criteo.schema import EMBEDDING_DIM
from dlrm_bench.errors import DataError
from dlrm_bench.progress import progress_bar

TABLES_FILE = "dlrm_embedding_weights_int8_v3.bin"
MLP_FILE = "model_test_without_embedding_weights_v3.pt"
CHUNK_ROWS = 1 << 20
"""Rows per streamed chunk: 128 MiB of fp32."""


def table_scale(weight: torch.Tensor) -> float:
    """max|W| / 127.5 over a [rows, 128] table, streamed in chunks (a 0 table gets scale 1)."""
    peak = 0.0
    for lo in range(0, weight.shape[0], CHUNK_ROWS):
        peak = max(peak, float(weight[lo:lo + CHUNK_ROWS].abs().max()))
    return peak / 127.5 if peak > 0 else 1.0


def quantize_rows(rows: torch.Tensor, scale: float) -> np.ndarray:
    """fp32 [n, 128] -> int8 [n, 128] numpy."""
    return torch.clamp(torch.round(rows.float() / scale), -127, 127).to(torch.int8).numpy()


def header_bytes(scales: Sequence[float]) -> bytes:
    return struct.pack("<i", len(scales)) + np.asarray(scales, dtype="<f4").tobytes()


def write_tables(path: Path, scales: Sequence[float], chunks: Iterator[np.ndarray], total_rows: int,
                 progress: bool = True) -> None:
    """Write the header, then every int8 chunk [n, 128] in order (tables back to back), atomically."""
    written = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header_bytes(scales))
        bar = progress_bar(total=total_rows, unit="row", unit_scale=True, desc=f"writing {path.name}", disable=not progress)
        for chunk in chunks:
            if chunk.dtype != np.int8 or chunk.ndim != 2 or chunk.shape[1] != EMBEDDING_DIM:
                raise ValueError(f"table chunk must be int8 [n, {EMBEDDING_DIM}], got {chunk.dtype} {chunk.shape}")
            f.write(np.ascontiguousarray(chunk).tobytes())
            written += chunk.shape[0]
            bar.update(chunk.shape[0])
        bar.close()
    if written != total_rows:
        path.unlink(missing_ok=True)
        raise ValueError(f"wrote {written} rows, expected {total_rows}")


def split_checkpoint_tables(state_dict: Mapping[str, torch.Tensor], path: Path, progress: bool = True) -> list[float]:
    """Quantize every emb_l.{t}.weight of `state_dict` into `path`; returns the scales."""
    count = sum(1 for k in state_dict if k.startswith("emb_l.") and k.endswith(".weight"))
    weights = [state_dict[f"emb_l.{t}.weight"] for t in range(count)]
    scales = [table_scale(w) for w in progress_bar(weights, desc="table scales", disable=not progress)]

    def chunks() -> Iterator[np.ndarray]:
        for w, s in zip(weights, scales):
            for lo in range(0, w.shape[0], CHUNK_ROWS):
                yield quantize_rows(w[lo:lo + CHUNK_ROWS], s)

    write_tables(path, scales, chunks(), sum(int(w.shape[0]) for w in weights), progress)
    return scales


def read_tables(path: Path, cardinalities: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(scales float32 [T], rows int8 [sum(cardinalities), 128] memory-mapped) with the file size checked."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: int8 tables not found (run `make generate_engines`)")
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4:
            raise DataError(f"{path}: truncated (no table count)")
        count = struct.unpack("<i", head)[0]
        if count != len(cardinalities):
            raise DataError(f"{path}: holds {count} tables, the dataset has {len(cardinalities)}")
        scales = np.frombuffer(f.read(4 * count), dtype="<f4").astype(np.float32)
    offset = 4 + 4 * count
    rows = int(sum(cardinalities))
    expected = offset + rows * EMBEDDING_DIM
    size = path.stat().st_size
    if size != expected:
        raise DataError(f"{path}: {size} bytes, expected {expected} for {rows} rows of the dataset's tables "
                        f"(truncated, or made for another dataset: rebuild with `make generate_engines`)")
    if scales.size != count or not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise DataError(f"{path}: table scales must be finite and positive")
    table = np.memmap(path, dtype=np.int8, mode="r", offset=offset, shape=(rows, EMBEDDING_DIM))
    return scales, table


def advise_random(tables: np.ndarray) -> bool:
    """madvise(MADV_RANDOM) the memory map under `tables` (from read_tables), for row lookups: a page-cache miss
    then reads its 4 KiB page instead of a readahead window (for a table larger than the free RAM the windows
    evict the rows that lookups need: calibrating the full 24 GB model read 45 GB from disk without this).
    False when `tables` is not a map or the call failed."""
    base = getattr(tables, "_mmap", None)
    if not isinstance(base, mmap.mmap) or not hasattr(mmap, "MADV_RANDOM"):
        return False
    try:
        base.madvise(mmap.MADV_RANDOM)
    except (OSError, ValueError):
        return False
    return True


def table_offsets(cardinalities: Sequence[int]) -> np.ndarray:
    """int64 [T]: first row of each table in the concatenated tensor."""
    return np.concatenate(([0], np.cumsum(np.asarray(cardinalities, dtype=np.int64))[:-1])).astype(np.int64)


def dequantized_lookup(scales: np.ndarray, rows: np.ndarray,
                       cardinalities: Sequence[int]) -> Callable[[int, np.ndarray], torch.Tensor]:
    """A function (table, ids int [B]) -> fp32 [B, 128] reading the int8 rows (for calibration without fp32 tables)."""
    offsets = table_offsets(cardinalities)
    advise_random(rows)

    def lookup(t: int, ids: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(rows[offsets[t] + ids.astype(np.int64)])).float() * float(scales[t])

    return lookup
