"""The FP32 reference engine: the checkpoint's model run as is in float32, the oracle for every faster engine.

CPU: the tables stay memory-mapped from the checkpoint (no copy). CUDA: the MLPs go to the GPU, and so do as many
tables as fit a memory budget (smallest first); the others stay in host memory, are gathered there and copied
over per batch, so the 96 GB tb00_40M.pt runs on an 80 GB GPU. TF32 is off while predicting: results are IEEE
float32 on both devices.

settings (all optional): "device" ("cpu", "cuda", "cuda:1"; default cuda when present), "batch_size" (pairs per
internal batch), "device_table_budget_gb" (GPU memory for tables; default 70% of the free memory).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrm_bench.criteo.dataset import DatasetMeta, Split
from dlrm_bench.criteo.schema import NUM_DENSE, NUM_SPARSE
from dlrm_bench.engines.base import Engine, contiguous_span, ranges_to_rows
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.model.checkpoint import load_for_dataset
from dlrm_bench.model.dlrm import DLRM, ieee_fp32
from dlrm_bench.settings import Settings

DEFAULT_BATCH = {"cpu": 8192, "cuda": 65536}
"""Pairs per internal batch: bounds memory (about 30 KB of activations per pair)."""


def _pick_device(requested: str | None) -> torch.device:
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"reference engine: device '{requested}' asked for, but this machine has no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"reference engine: unsupported device '{requested}' (use cpu or cuda[:N])")
    return device


def _tables_for_device(model: DLRM, device: torch.device, budget_gb: float | None) -> set[int]:
    """Indices of the tables that fit the GPU budget, smallest first."""
    if device.type != "cuda":
        return set(range(len(model.emb_l)))
    if budget_gb is None:
        free, _ = torch.cuda.mem_get_info(device)
        budget = 0.7 * free
    else:
        budget = float(budget_gb) * 2**30
    chosen: set[int] = set()
    used = 0
    for k in sorted(range(len(model.emb_l)), key=lambda k: model.emb_l[k].weight.numel()):
        size = model.emb_l[k].weight.numel() * 4
        if used + size > budget:
            break
        chosen.add(k)
        used += size
    return chosen


def _writable(array: np.ndarray, dtype: type) -> np.ndarray:
    """A C-contiguous, writable array of `dtype` (copies read-only memory maps: torch wants writable memory)."""
    out = np.ascontiguousarray(array, dtype=dtype)
    return out if out.flags.writeable else out.copy()


class ReferenceEngine(Engine):
    """FP32 DLRM inference with the reference module (model.dlrm.DLRM), batched, without autograd."""

    name = "reference"

    def __init__(self, model: DLRM, device: torch.device | str = "cpu", batch_size: int | None = None,
                 device_table_budget_gb: float | None = None, model_path: Path | None = None) -> None:
        super().__init__()
        self._device = torch.device(device)
        self.batch_size = int(batch_size or DEFAULT_BATCH[self._device.type])
        if self.batch_size < 1:
            raise UserError(f"reference engine: batch_size must be positive, got {self.batch_size}")
        self.model_path = model_path
        self.cardinalities = np.asarray(model.cardinalities, dtype=np.int64)
        self.model = model.eval().requires_grad_(False)
        self.device_tables = _tables_for_device(self.model, self._device, device_table_budget_gb)
        self._place(self.model)
        self._lock = threading.Lock()

    def _place(self, model: DLRM) -> None:
        """MLPs on the device; each table on the device if chosen, else left where it is (host, memory-mapped)."""
        model.bot_l.to(self._device)
        model.top_l.to(self._device)
        model.interaction.to(self._device)
        for k in self.device_tables:
            model.emb_l[k].to(self._device)

    @property
    def device(self) -> str:
        if self._device.type == "cuda":
            return f"{self._device} ({torch.cuda.get_device_name(self._device)})"
        return "cpu"

    def _check_inputs(self, numeric: np.ndarray, categorical: np.ndarray) -> None:
        if numeric.ndim != 2 or numeric.shape[1] != NUM_DENSE:
            raise DataError(f"reference engine: numeric must be [B, {NUM_DENSE}], got {list(numeric.shape)}")
        if categorical.ndim != 2 or categorical.shape[1] != NUM_SPARSE or categorical.shape[0] != numeric.shape[0]:
            raise DataError(f"reference engine: categorical must be [{numeric.shape[0]}, {NUM_SPARSE}], "
                            f"got {list(categorical.shape)}")
        if categorical.shape[0] == 0:
            return
        low, high = categorical.min(axis=0), categorical.max(axis=0)
        bad = np.flatnonzero((low < 0) | (high >= self.cardinalities))
        if bad.size:
            k = int(bad[0])
            raise DataError(f"reference engine: categorical feature C{k + 1} has ids in [{int(low[k])}, "
                            f"{int(high[k])}] but its table has {int(self.cardinalities[k])} rows")

    def _gather(self, ids: torch.Tensor) -> torch.Tensor:
        """ids int64 [B, 26] on the host -> vectors float32 [B, 26, 128] on the device."""
        ids_device = ids.to(self._device, non_blocking=True)
        parts = []
        for k, table in enumerate(self.model.emb_l):
            if k in self.device_tables:
                parts.append(table(ids_device[:, k]))
            else:
                parts.append(table(ids[:, k]).to(self._device, non_blocking=True))
        return torch.stack(parts, dim=1)

    def _forward(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """One internal batch: float32 [b, 13], int [b, 26] -> float32 [b]."""
        dense_in = torch.from_numpy(_writable(numeric, np.float32)).to(self._device)
        ids = torch.from_numpy(_writable(categorical, np.int64))
        features = self.model.interaction(self.model.bot_l(dense_in), self._gather(ids))  # [b, 479]
        return self.model.top_l(features).squeeze(1).float().cpu().numpy()

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        numeric, categorical = np.asarray(numeric), np.asarray(categorical)
        self._check_inputs(numeric, categorical)
        out = np.empty(numeric.shape[0], dtype=np.float32)
        with self._lock, torch.inference_mode(), ieee_fp32():
            for lo in range(0, numeric.shape[0], self.batch_size):
                hi = min(lo + self.batch_size, numeric.shape[0])
                out[lo:hi] = self._forward(numeric[lo:hi], categorical[lo:hi])
        return out

    def predict_ranges(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Streams the bound split batch by batch, so huge ranges never load the whole split into memory."""
        if self.split is None:
            raise RuntimeError(f"{self.name} engine: load() a split before predicting")
        span = contiguous_span(starts, ends)
        if span is not None:
            return predict_rows(self, self.split, span[0], span[1])
        rows = ranges_to_rows(starts, ends)
        out = np.empty(rows.shape[0], dtype=np.float32)
        for lo in range(0, rows.shape[0], self.batch_size):
            chunk = rows[lo:lo + self.batch_size]
            out[lo:lo + chunk.shape[0]] = self.predict(self.split.numeric[chunk], self.split.categorical[chunk])
        return out

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "device": self.device, "precision": "fp32", "batch_size": self.batch_size,
                "tables_on_device": len(self.device_tables), "model_path": str(self.model_path or "")}

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def predict_rows(engine: Engine, split: Split, start: int, end: int, chunk: int = 1 << 20,
                 progress: bool = False) -> np.ndarray:
    """engine.predict over rows [start, end) of `split`, reading `chunk` rows at a time: float32 [end - start]."""
    out = np.empty(end - start, dtype=np.float32)
    bar = None
    if progress:
        from dlrm_bench.progress import progress_bar

        bar = progress_bar(total=end - start, unit="pair", unit_scale=True, desc="fp32 reference", leave=False)
    for lo in range(start, end, chunk):
        hi = min(lo + chunk, end)
        out[lo - start:hi - start] = engine.predict(np.asarray(split.numeric[lo:hi]),
                                                    np.asarray(split.categorical[lo:hi]))
        if bar is not None:
            bar.update(hi - lo)
    if bar is not None:
        bar.close()
    return out


def build(model_path: Path, meta: DatasetMeta, settings: Settings | None = None) -> ReferenceEngine:
    """Load the checkpoint (memory-mapped), check it against the dataset's table sizes, place it on the device."""
    settings = settings or Settings()
    checkpoint = load_for_dataset(model_path, meta.cardinalities, dataset=f"dataset '{meta.name}'")
    model = DLRM.from_state_dict(checkpoint.state_dict)
    return ReferenceEngine(model, _pick_device(settings.device), settings.batch_size,
                           settings.device_table_budget_gb, model_path=Path(model_path))
