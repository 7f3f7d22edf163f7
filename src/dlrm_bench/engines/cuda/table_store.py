"""Where the int8 embedding rows live for the GPU gather: all on the GPU, or hot rows on the GPU and the cold rest
in pinned host memory that the gather kernel reads directly over the bus (no managed / UVM memory).

`embedding_weights_on_gpu_part` = p: all rows of all tables are ranked by normalised access frequency
(row_frequencies.bin; each table's counts divided by the table's total, so every table sums to 1; ties broken by
the lower global row id), and the first ceil(p * rows) go to the GPU. `remap` (int32 [R_total], on the GPU) turns a
global row id into its place: r >= 0 is row r of the hot tensor, r < 0 is row -r-1 of the cold tensor. Both keep
their rows in global row order. The same bytes are read either way, so predictions are bit-identical to p = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlrm_bench.criteo.frequencies import hottest_rows, read_row_frequencies
from dlrm_bench.errors import UserError

CHUNK_ROWS = 1 << 22
"""Rows per streamed chunk while splitting the tables (512 MiB)."""


@dataclass
class TableStore:
    """hot: int8 [H, 128] on the GPU; cold: int8 [C, 128] pinned host memory or None; remap: int32 [R] or None."""

    hot: torch.Tensor
    cold: torch.Tensor | None = None
    remap: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.hot.device

    @property
    def gpu_part(self) -> float:
        total = self.hot.shape[0] + (0 if self.cold is None else self.cold.shape[0])
        return self.hot.shape[0] / max(total, 1)

    def to(self, device: torch.device) -> "TableStore":
        """A copy for another GPU: hot rows and remap copied device to device, the pinned cold rows shared."""
        return TableStore(self.hot.to(device), self.cold, None if self.remap is None else self.remap.to(device))

    def device_lookup_fraction(self, categorical: torch.Tensor, offsets: torch.Tensor) -> float:
        """Fraction of the lookups of `categorical` (int32 [N, 26], on this device) served from the GPU."""
        if self.remap is None:
            return 1.0
        hits, total = 0, 0
        for lo in range(0, categorical.shape[0], 1 << 22):
            rows = categorical[lo:lo + (1 << 22)].to(torch.int64) + offsets.to(self.device)[None, :]
            hits += int((self.remap[rows] >= 0).sum())
            total += rows.numel()
        return hits / max(total, 1)


def hot_row_mask(frequencies: list[np.ndarray], part: float, device: torch.device) -> torch.Tensor:
    """bool [R_total] on `device`: the ceil(part * R) rows with the highest normalised frequency (ties: lower id)."""
    mask = torch.zeros(sum(int(f.shape[0]) for f in frequencies), dtype=torch.bool, device=device)
    mask[torch.from_numpy(hottest_rows(frequencies, part)).to(device)] = True
    return mask


def build_store(tables: np.ndarray, part: float, device: torch.device,
                frequencies_file: Path | None = None, cardinalities: list[int] | None = None) -> TableStore:
    """Upload `tables` (int8 [R, 128], memory-mapped) whole (part = 1) or split hot/cold, streamed in chunks."""
    if not 0.0 < part <= 1.0:
        raise UserError(f"embedding_weights_on_gpu_part must be in (0, 1], got {part}")
    if part >= 1.0:
        return TableStore(_upload(tables, device))
    if frequencies_file is None or not Path(frequencies_file).exists():
        raise UserError(f"embedding_weights_on_gpu_part={part} needs row_frequencies.bin "
                        f"({frequencies_file}); run `make preprocess_data`")
    freqs = read_row_frequencies(frequencies_file)
    if cardinalities is not None and [len(f) for f in freqs] != list(cardinalities):
        raise UserError(f"{frequencies_file}: table sizes {[len(f) for f in freqs][:3]}... do not match the "
                        f"model's {list(cardinalities)[:3]}...")
    mask = hot_row_mask(freqs, part, device)
    return _split(tables, mask, device)


def _upload(tables: np.ndarray, device: torch.device) -> torch.Tensor:
    out = torch.empty(tables.shape, dtype=torch.int8, device=device)
    for lo in range(0, tables.shape[0], CHUNK_ROWS):
        out[lo:lo + CHUNK_ROWS].copy_(torch.from_numpy(np.array(tables[lo:lo + CHUNK_ROWS])))
    return out


def _split(tables: np.ndarray, mask: torch.Tensor, device: torch.device) -> TableStore:
    """Stream the tables once: hot rows to the GPU tensor, cold rows to a pinned host tensor; build the remap."""
    hot_count = int(mask.sum())
    cold_count = mask.numel() - hot_count
    hot_pos = torch.cumsum(mask.to(torch.int64), 0) - 1
    cold_pos = torch.cumsum((~mask).to(torch.int64), 0) - 1
    remap = torch.where(mask, hot_pos, -cold_pos - 1).to(torch.int32)
    hot = torch.empty(hot_count, 128, dtype=torch.int8, device=device)
    cold = torch.empty(cold_count, 128, dtype=torch.int8, pin_memory=torch.cuda.is_available())
    mask_host = mask.cpu().numpy()
    h = c = 0
    for lo in range(0, tables.shape[0], CHUNK_ROWS):
        chunk = np.array(tables[lo:lo + CHUNK_ROWS])
        m = mask_host[lo:lo + chunk.shape[0]]
        hot_rows = torch.from_numpy(chunk[m])
        hot[h:h + hot_rows.shape[0]].copy_(hot_rows)
        cold_rows = chunk[~m]
        cold[c:c + cold_rows.shape[0]].copy_(torch.from_numpy(cold_rows))
        h += hot_rows.shape[0]
        c += cold_rows.shape[0]
    return TableStore(hot, cold, remap)
