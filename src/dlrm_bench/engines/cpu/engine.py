"""The CPU engine: the int8 recipe (quant/recipe.py) with oneDNN int8 GEMMs and a native gather + interaction.

Per internal batch of at most `batch_size` pairs:

    numeric int8 [n, 13] (numeric_int8_linear.npy, or quantized from fp32)  -> u8 [n, 16]
    bottom MLP: 3 int8 GEMMs, requantized per channel                       -> dense u8 [n, 128]
    gather + interaction (native kernel): 26 int8 rows per pair from the memory-mapped tables, 351 int32 dots,
        requantized per column, split into positive / negative parts        -> top input u8 [n, 832]
    top MLP: 512x1024 (as 832x1024), 1024x1024, 1024x512 int8 GEMMs requantized per channel; 512x256 int8 GEMM
        with an fp32 ReLU output; 256 -> 1 and sigmoid in fp32             -> probabilities fp32 [n]

How this differs from the recipe's int8 kernels, and why (AVX2 without VNNI: u8 x s8 products are summed pairwise in
int16 and saturate for activations above 127; oneDNN there takes unsigned activations only):
* activations are passed as uint8 holding the recipe's int8 values, all in [0, 127] (ReLU outputs; the numeric
  input is log1p'd counts >= 0);
* the interaction's signed dots are split into max(q, 0) and max(-q, 0) columns, and the first top layer gets
  [W_dense, W_dots, -W_dots] (K = 830 instead of 479): the product is exact, at 1.6x that layer's work (+15% of
  all MACs);
* the per-channel requantization is folded into the GEMM epilogue (scale w_scale / act_scale, bias
  bias / act_scale, hardtanh(0, 127)): an output may differ from the emulation by one step, rarely.
So the engine computes the recipe itself (no per-tensor activation variant); it matches
`recipe.emulate_forward` up to those one-step rounding differences.

Settings (settings.py): threads (torch's intra-op threads, process-wide), batch_size (pairs per internal batch,
bounds memory: about 3.5 KB a pair), cpu_gemm, cpu_interaction, embedding_weights_in_ram_part (table_store.py).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from dlrm_bench.criteo.dataset import Split
from dlrm_bench.criteo.schema import NUM_DENSE, NUM_SPARSE
from dlrm_bench.engines.base import Engine, contiguous_span, ranges_to_rows
from dlrm_bench.engines.cpu.interaction import TOP_WIDTH, Interaction
from dlrm_bench.engines.cpu.mlp import BottomMLP, TopMLP, onednn_available
from dlrm_bench.engines.cpu.table_store import build_store
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.quant.artifacts import Int8Model
from dlrm_bench.quant.recipe import quantize_numeric
from dlrm_bench.settings import Settings



def machine_threads() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class StageProfile:
    """Wall seconds and pairs per stage, accumulated while enabled (off by default: no overhead)."""

    def __init__(self) -> None:
        self.enabled = False
        self.seconds: dict[str, float] = defaultdict(float)
        self.pairs = 0

    def reset(self) -> None:
        self.seconds.clear()
        self.pairs = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start


class CpuEngine(Engine):
    """int8 DLRM inference on the CPU over one bound split (see the module docstring)."""

    name = "cpu"

    def __init__(self, model: Int8Model, settings: Settings | None = None,
                 frequencies_file: Path | None = None) -> None:
        """`frequencies_file`: the dataset's row_frequencies.bin (needed for 0 < embedding_weights_in_ram_part < 1)."""
        super().__init__()
        settings = settings or Settings()
        self.threads = settings.threads or machine_threads()
        self.batch_size = settings.batch_size
        self.gemm = settings.cpu_gemm
        if self.gemm == "int8" and not onednn_available():
            raise UserError("cpu engine: this torch build lacks oneDNN int8 ops; --set cpu_gemm=fp32")
        torch.set_num_threads(self.threads)
        qm = model.quantized
        offsets = np.asarray(model.table_offsets, dtype=np.int64)
        self.rows_per_table = np.diff(np.append(offsets, model.tables.shape[0])).astype(np.int64)
        self.model_dir = model.directory
        self.bottom = BottomMLP(qm, self.gemm)
        self.store = build_store(model.tables, settings.embedding_weights_in_ram_part, frequencies_file,
                                 self.rows_per_table.tolist())
        self.interaction = Interaction(qm, self.store, offsets, self.rows_per_table, self.threads,
                                       use_native=settings.cpu_interaction == "native")
        self.top = TopMLP(qm, self.gemm)
        self.profile = StageProfile()
        self.numeric_int8: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return f"cpu ({self.threads} threads, {torch.backends.cpu.get_cpu_capability()})"

    def load(self, split: Split) -> None:
        """Bind the split; use its numeric_int8_linear.npy (the recipe's numeric input) when it has one."""
        super().load(split)
        self.numeric_int8 = split.optional("numeric_int8_linear.npy")

    # --- one internal batch -------------------------------------------------------------------------------------

    def _forward(self, numeric_q: torch.Tensor, categorical: np.ndarray) -> np.ndarray:
        """numeric_q int8 [n, 13]; categorical int32 [n, 26] C-contiguous -> fp32 [n]."""
        n = numeric_q.shape[0]
        prof = self.profile
        with prof.stage("bottom"):
            dense = self.bottom(numeric_q)
        with prof.stage("interaction"):
            x = torch.empty(n, TOP_WIDTH, dtype=torch.uint8)
            self.interaction(dense, categorical, x)
        for name, layer in zip(TopMLP.names, self.top.layers):
            with prof.stage(name):
                x = layer(x)
                if name == TopMLP.names[-1]:
                    x = self.top.final(x)
        prof.pairs += n
        return x.numpy()

    def _batches(self, numeric_q: np.ndarray | torch.Tensor, categorical: np.ndarray, out: np.ndarray) -> None:
        """Fill out[i] for every pair, batch_size pairs at a time. numeric_q: int8 [N, 13]; categorical [N, 26]."""
        for lo in range(0, out.shape[0], self.batch_size):
            hi = min(lo + self.batch_size, out.shape[0])
            with self.profile.stage("inputs"):
                num = torch.from_numpy(np.array(numeric_q[lo:hi], dtype=np.int8)) \
                    if isinstance(numeric_q, np.ndarray) else numeric_q[lo:hi]  # a copy: maps are read-only
                cat = np.ascontiguousarray(categorical[lo:hi], dtype=np.int32)
            out[lo:hi] = self._forward(num, cat)

    def _check_shapes(self, numeric: np.ndarray, categorical: np.ndarray) -> None:
        if numeric.ndim != 2 or numeric.shape[1] != NUM_DENSE:
            raise DataError(f"cpu engine: numeric must be [B, {NUM_DENSE}], got {list(numeric.shape)}")
        if categorical.shape != (numeric.shape[0], NUM_SPARSE):
            raise DataError(f"cpu engine: categorical must be [{numeric.shape[0]}, {NUM_SPARSE}], "
                            f"got {list(categorical.shape)}")

    # --- the Engine interface -------------------------------------------------------------------------------------

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """numeric fp32 [B, 13] (log1p'd), categorical int [B, 26] -> fp32 [B]."""
        numeric, categorical = np.asarray(numeric), np.asarray(categorical)
        self._check_shapes(numeric, categorical)
        out = np.empty(numeric.shape[0], dtype=np.float32)
        if not numeric.flags.writeable:  # torch warns on read-only memory maps; 52 bytes a pair
            numeric = numeric.copy()
        with self._lock, torch.inference_mode():
            self._batches(quantize_numeric(numeric), categorical, out)
        return out

    def predict_ranges(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Pairs of [starts[i], ends[i]) of the bound split; contiguous spans are read as memory-map views."""
        if self.split is None:
            raise RuntimeError("cpu engine: load() a split before predicting")
        if self.numeric_int8 is None:
            return super().predict_ranges(starts, ends)
        span = contiguous_span(starts, ends)
        rows: slice | np.ndarray = slice(*span) if span is not None else ranges_to_rows(starts, ends)
        numeric_q, categorical = self.numeric_int8[rows], self.split.categorical[rows]
        out = np.empty(categorical.shape[0], dtype=np.float32)
        with self._lock, torch.inference_mode():
            self._batches(numeric_q, categorical, out)
        return out

    def warmup(self) -> None:
        """One small batch through every stage (oneDNN picks and JITs its kernels on first use)."""
        n = 256
        numeric = np.zeros((n, NUM_DENSE), dtype=np.float32)
        self.predict(numeric, np.zeros((n, NUM_SPARSE), dtype=np.int32))

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "device": self.device, "precision": f"int8 ({self.gemm} GEMMs)",
                "threads": self.threads, "batch_size": self.batch_size, "cpu_gemm": self.gemm,
                "interaction": self.interaction.kind, "isa": torch.backends.cpu.get_cpu_capability(),
                "tables": self.store.kind, "embedding_weights_in_ram_part": self.store.ram_part, "model_dir": str(self.model_dir)}

    def close(self) -> None:
        self.interaction.close()
