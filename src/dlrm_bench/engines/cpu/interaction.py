"""Fused embedding gather + dot interaction for the CPU engine: int8 rows in, the top MLP's uint8 input out.

Output row (uint8 [TOP_WIDTH]): [0, 128) the dense vector (its int8 value, >= 0 after the ReLU); [128, 479) the
positive part max(q, 0) of the 351 requantized dots q (recipe: round(idot * s_i * s_j / column scale), clamped to
+-127); [479, 830) their negative part max(-q, 0); [830, 832) zero. Splitting the signed dots into two unsigned
halves keeps every GEMM input in [0, 127]: on AVX2 (no VNNI) the u8 x s8 products are summed pairwise in int16
(vpmaddubsw), which saturates for inputs above 127, and oneDNN takes only unsigned activations there. The top
MLP's first layer gets the matching weights [W_dense, W_dots, -W_dots] (mlp.py), so the product is exact.

Two implementations with identical output: the native kernel (interaction.c, one pair at a time in L1, the
batch split over the engine's threads) and a torch fallback (fp32 bmm; exact, since |dot| < 2^24).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from dlrm_bench.criteo.schema import EMBEDDING_DIM, NUM_INTERACTIONS, NUM_SPARSE
from dlrm_bench.engines.cpu import native
from dlrm_bench.engines.cpu.table_store import CpuTableStore
from dlrm_bench.errors import DataError
from dlrm_bench.quant.recipe import QuantizedDLRM, interaction_multipliers, interaction_pairs

TOP_WIDTH = 832
"""Columns of the top MLP's input: 128 + 2 * 351 = 830, padded to a multiple of 64."""
POS = EMBEDDING_DIM
NEG = EMBEDDING_DIM + NUM_INTERACTIONS
END = EMBEDDING_DIM + 2 * NUM_INTERACTIONS
MIN_PAIRS_PER_THREAD = 64


def _pointer(array: np.ndarray | torch.Tensor) -> int:
    return int(array.data_ptr()) if isinstance(array, torch.Tensor) else int(array.ctypes.data)


class Interaction:
    """Gathers the 26 rows of each pair from the int8 tables and writes the top-MLP input.

    tables: int8 [R, 128] (a memory map is fine: only touched rows are read), or a CpuTableStore (hot rows in RAM,
    the rest from the map; table_store.py); offsets: int64 [26] (first row of each table); rows_per_table: int64 [26].
    """

    def __init__(self, qm: QuantizedDLRM, tables: np.ndarray | CpuTableStore, offsets: np.ndarray,
                 rows_per_table: np.ndarray, threads: int, use_native: bool = True) -> None:
        self.store = tables if isinstance(tables, CpuTableStore) else CpuTableStore(tables)
        self.tables = self.store.tables
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        self.rows = np.ascontiguousarray(rows_per_table, dtype=np.int64)
        r, c = interaction_pairs()
        self.mult = interaction_multipliers(qm)[r, c].contiguous()  # fp32 [351]
        self.flat_pairs = (r * (NUM_SPARSE + 1) + c).contiguous()  # int64 [351], into a flattened 27 x 27
        self.threads = max(1, threads)
        self.lib = native.load_kernel() if use_native else None
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="cpu-interaction") if self.threads > 1 else None

    @property
    def kind(self) -> str:
        return "native" if self.lib is not None else "torch"

    def __call__(self, dense: torch.Tensor, categorical: np.ndarray, out: torch.Tensor) -> None:
        """dense: uint8 [n, 128] contiguous; categorical: int32 [n, 26] C-contiguous; out: uint8 [n, TOP_WIDTH]."""
        n = dense.shape[0]
        # the native kernel reads raw pointers: layouts are checked, not assumed
        if dense.dtype != torch.uint8 or not dense.is_contiguous() or tuple(dense.shape) != (n, EMBEDDING_DIM):
            raise ValueError(f"interaction: dense must be contiguous uint8 [n, 128], got {dense.dtype} "
                             f"{list(dense.shape)}")
        if categorical.dtype != np.int32 or not categorical.flags.c_contiguous or categorical.shape != (n, NUM_SPARSE):
            raise ValueError(f"interaction: categorical must be C-contiguous int32 [{n}, 26], got "
                             f"{categorical.dtype} {list(categorical.shape)}")
        if out.dtype != torch.uint8 or out.stride(1) != 1 or tuple(out.shape) != (n, TOP_WIDTH):
            raise ValueError(f"interaction: out must be uint8 [{n}, {TOP_WIDTH}] with unit column stride")
        if n == 0:
            return
        if self.lib is not None:
            self._native(dense, categorical, out)
        else:
            self._torch(dense, categorical, out)

    def _native_slice(self, dense: torch.Tensor, categorical: np.ndarray, out: torch.Tensor, lo: int, hi: int) -> int:
        common = (_pointer(self.offsets), _pointer(self.rows), _pointer(categorical), _pointer(dense),
                  _pointer(self.mult), _pointer(out), out.stride(0), lo, hi)
        if self.store.remap is None:
            return int(self.lib.dlrm_interaction(_pointer(self.tables), *common))
        return int(self.lib.dlrm_interaction_hot(_pointer(self.tables), _pointer(self.store.hot),
                                                 _pointer(self.store.remap), *common))

    def _native(self, dense: torch.Tensor, categorical: np.ndarray, out: torch.Tensor) -> None:
        n = dense.shape[0]
        parts = min(self.threads, max(1, n // MIN_PAIRS_PER_THREAD))
        cuts = np.linspace(0, n, parts + 1).astype(np.int64).tolist()
        spans = list(zip(cuts[:-1], cuts[1:]))
        if parts == 1 or self.pool is None:
            results = [self._native_slice(dense, categorical, out, lo, hi) for lo, hi in spans]
        else:
            results = list(self.pool.map(lambda s: self._native_slice(dense, categorical, out, *s), spans))
        for (lo, _), bad in zip(spans, results):
            if bad >= 0:
                self._raise_bad_id(categorical[lo + bad])

    def _raise_bad_id(self, ids: np.ndarray) -> None:
        """ids: int32 [26] of a pair that has an out-of-range id."""
        bad = np.flatnonzero((ids < 0) | (ids >= self.rows))
        k = int(bad[0]) if bad.size else 0
        raise DataError(f"cpu engine: categorical feature C{k + 1} has id {int(ids[k])} but its table has "
                        f"{int(self.rows[k])} rows")

    def _torch(self, dense: torch.Tensor, categorical: np.ndarray, out: torch.Tensor) -> None:
        """The same output with torch ops: gather, fp32 Gram matrices in chunks, requantize."""
        low, high = categorical.min(axis=0), categorical.max(axis=0)
        if np.any(low < 0) or np.any(high >= self.rows):
            row = int(np.flatnonzero(((categorical < 0) | (categorical >= self.rows)).any(axis=1))[0])
            self._raise_bad_id(categorical[row])
        chunk = 2048
        for lo in range(0, dense.shape[0], chunk):
            ids = categorical[lo:lo + chunk].astype(np.int64) + self.offsets[None, :]
            rows = torch.from_numpy(self.store.gather(ids.reshape(-1)))  # int8 [b * 26, 128]
            d = dense[lo:lo + chunk]
            vectors = torch.cat([d.float()[:, None, :], rows.view(d.shape[0], NUM_SPARSE, EMBEDDING_DIM).float()], 1)
            gram = torch.bmm(vectors, vectors.transpose(1, 2)).view(d.shape[0], -1)  # fp32 [b, 729], exact
            q = torch.clamp(torch.round(gram.index_select(1, self.flat_pairs) * self.mult), -127, 127)
            block = out[lo:lo + chunk]
            block[:, :POS] = d
            block[:, POS:NEG] = torch.clamp(q, min=0).to(torch.uint8)
            block[:, NEG:END] = torch.clamp(-q, min=0).to(torch.uint8)
            block[:, END:] = 0

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
