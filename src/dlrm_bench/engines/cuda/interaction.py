"""Embedding gather fused with the dot interaction, all in int8.

One program handles BLOCK_P pairs. Per pair it loads the 26 int8 table rows (128 bytes each, straight from the
big table tensor; no fp copy, nothing written back) and the int8 dense vector into a [32, 128] tile (slot 0 =
dense, 1..26 = tables, 27..31 = zero), forms the 32 x 32 integer Gram matrix with one batched int8 MMA, applies
the scales after the integer dot and requantizes each of the 351 lower-triangle entries in one multiply (s_i * s_j over its
column's scale) and scatters them into the top-MLP input row (512 wide, int8) in the "paired" column layout: row
i's entries start at an even column, 128 + 2 F(i) with F(i) = sum over k < i of ceil(k / 2), and take ceil(i / 2) *
2 columns (an odd row also writes its diagonal, into a column whose top-MLP weights are zero): columns 128..491.
The columns are arithmetic and pair-aligned, so each thread stores two bytes at once. The recipe's own order (entry
(i, j), j < i, at column 128 + i(i-1)/2 + j) would need one-byte stores; the top MLP's first-layer weights are
permuted to the paired columns instead (`permute_top_weight`), and the predictions are the same.

Two kernels compute it: `_interaction_kernel` below (Triton, every input form: row indices, packed ids, hot/cold
tables) and, on a Hopper GPU, a CUDA kernel of the native library (csrc/interaction_mma.cu, `kernel="cuda"`: one
warp per pair, the MMA operands loaded straight from the rows, no shared memory; the same bytes out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dlrm_bench.criteo.schema import EMBEDDING_DIM, NUM_SPARSE
from dlrm_bench.criteo.packing import PackingLayout
from dlrm_bench.engines.cuda.table_store import TableStore
from dlrm_bench.errors import UserError
from dlrm_bench.engines.cuda.triton_env import requantize, tl, triton
from dlrm_bench.quant.recipe import QuantizedDLRM, interaction_multipliers, interaction_pairs

if TYPE_CHECKING:
    from dlrm_bench.engines.cuda.kernel_library import KernelLibrary

SLOTS = 32
"""27 vectors padded to 32 for the MMA."""
KERNELS = ("triton", "cuda")
"""The interaction's kernels (module docstring)."""
PAIRS_PER_WARP = 8
"""Pairs each warp of the CUDA kernel computes one after the other (the next pair's rows load meanwhile)."""


@triton.jit(do_not_specialize=["num_pairs"], do_not_specialize_on_alignment=["cat_ptr"])
def _interaction_kernel(top_ptr, top_stride, cat_ptr, rows_ptr, cat_stride, num_pairs,
                        tables_ptr, offsets_ptr, mult_ptr, remap_ptr, cold_ptr, unpack_ptr,
                        NUM_TABLES: tl.constexpr, HAS_ROWS: tl.constexpr, HAS_COLD: tl.constexpr,
                        PACKED: tl.constexpr, BLOCK_P: tl.constexpr, ITERS: tl.constexpr, NUM_STAGES: tl.constexpr):
    """top: int8 [num_pairs, top_stride] (dense in columns 0..127, dots written to 128..491, paired layout);
    cat: int32 [*, cat_stride] ids; rows: int64 [num_pairs] (if HAS_ROWS) picks cat's rows;
    tables: int8 [R_total, 128]; offsets: int64 [NUM_TABLES] first row of each table;
    mult: fp32 [32, 32] (s_i * s_j / column scale, recipe.interaction_multipliers). HAS_COLD: tables holds only the hot rows; remap (int32 [R_total])
    gives each global row's place (>= 0 hot row, < 0 row -r-1 of cold, pinned host memory read over the bus).
    PACKED: cat holds the 16-word compressed ids (criteo/packing.py); unpack: int64 [4, 32] per slot (word,
    shift, width mask, straddles) and each id is unpacked here, in registers.
    Each program handles ITERS blocks of BLOCK_P pairs in a software-
    pipelined loop (NUM_STAGES), so the gathers of the next block are in flight while this one computes."""
    pid = tl.program_id(0)
    s = tl.arange(0, 32)
    d = tl.arange(0, 128)
    t = s - 1
    is_table = (s >= 1) & (s <= NUM_TABLES)
    first = tl.load(offsets_ptr + t, mask=is_table, other=0)
    grid2 = s[:, None] * 32 + s[None, :]
    mult = tl.load(mult_ptr + grid2)
    half = (s - 1) // 2  # F(i) = half * (half + 1) for odd i - 1, (half + 1)^2 for even i - 1 (i >= 1)
    row_start = 128 + 2 * tl.where((s - 1) % 2 == 0, half * (half + 1), (half + 1) * (half + 1))
    column = row_start[:, None] + s[None, :]
    written = (s[None, :] < ((s + 1) // 2 * 2)[:, None]) & ((s >= 1) & (s <= NUM_TABLES))[:, None]
    for it in tl.range(0, ITERS, num_stages=NUM_STAGES):
        p = (pid * ITERS + it) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < num_pairs
        if HAS_ROWS:
            r = tl.load(rows_ptr + p, mask=pmask, other=0)
        else:
            r = p.to(tl.int64)
        lookup = pmask[:, None] & is_table[None, :]
        if PACKED:
            word = tl.load(unpack_ptr + s)
            shift = tl.load(unpack_ptr + 32 + s)
            width_mask = tl.load(unpack_ptr + 64 + s)
            straddle = tl.load(unpack_ptr + 96 + s) != 0
            base = cat_ptr + r[:, None] * cat_stride + word[None, :]
            lo = tl.load(base, mask=lookup, other=0).to(tl.int64) & 0xFFFFFFFF
            hi = tl.load(base + 1, mask=lookup & straddle[None, :], other=0).to(tl.int64) & 0xFFFFFFFF
            ids = ((lo >> shift[None, :]) | (hi << (32 - shift[None, :]))) & width_mask[None, :]
        else:
            ids = tl.load(cat_ptr + r[:, None] * cat_stride + t[None, :], mask=lookup, other=0)
        row = ids.to(tl.int64) + first[None, :]
        if HAS_COLD:
            place = tl.load(remap_ptr + row, mask=lookup, other=0)
            is_hot = place >= 0
            hot_row = tl.where(is_hot, place, 0).to(tl.int64)
            cold_row = tl.where(is_hot, 0, -place - 1).to(tl.int64)
            from_hot = tl.load(tables_ptr + hot_row[:, :, None] * 128 + d[None, None, :],
                               mask=(lookup & is_hot)[:, :, None], other=0)
            from_cold = tl.load(cold_ptr + cold_row[:, :, None] * 128 + d[None, None, :],
                                mask=(lookup & (place < 0))[:, :, None], other=0)
            vectors = tl.where(is_hot[:, :, None], from_hot, from_cold)
        else:
            vectors = tl.load(tables_ptr + row[:, :, None] * 128 + d[None, None, :], mask=lookup[:, :, None],
                              other=0)
        p64 = p.to(tl.int64)
        dense = tl.load(top_ptr + p64[:, None] * top_stride + d[None, :], mask=pmask[:, None], other=0)
        vectors = tl.where((s == 0)[None, :, None], dense[:, None, :], vectors)
        gram = tl.dot(vectors, tl.trans(vectors, (0, 2, 1)), out_dtype=tl.int32)
        q = requantize(gram.to(tl.float32), mult[None, :, :])
        tl.store(top_ptr + p64[:, None, None] * top_stride + column[None, :, :], q,
                 mask=pmask[:, None, None] & written[None, :, :])


def interaction_multiplier_tile(qm: QuantizedDLRM) -> torch.Tensor:
    """fp32 [32, 32]: recipe.interaction_multipliers, zero-padded to the MMA's 32 slots."""
    mult = torch.zeros(SLOTS, SLOTS)
    mult[:NUM_SPARSE + 1, :NUM_SPARSE + 1] = interaction_multipliers(qm)
    return mult


def paired_columns() -> torch.Tensor:
    """int64 [351]: the "paired" layout's column of each lower-triangle entry, in the recipe's order
    (interaction_pairs)."""
    r, c = interaction_pairs()
    half = (r - 1) // 2
    start = EMBEDDING_DIM + 2 * torch.where((r - 1) % 2 == 0, half * (half + 1), (half + 1) * (half + 1))
    return start + c


def to_paired_layout(rows: torch.Tensor) -> torch.Tensor:
    """[B, 512] in the recipe's column order -> the same values in the paired layout's columns (the dense part
    stays; unused columns are 0). For a top-MLP input row, and for the first top layer's weight [N, 512]."""
    out = torch.zeros_like(rows)
    out[:, :EMBEDDING_DIM] = rows[:, :EMBEDDING_DIM]
    cols = paired_columns().to(rows.device)
    out[:, cols] = rows[:, EMBEDDING_DIM:EMBEDDING_DIM + cols.numel()]
    return out


def permute_top_weight(weight: torch.Tensor) -> torch.Tensor:
    """The top MLP's first-layer weight, int8 [N, 512], with its columns moved where the paired layout puts the
    inputs (zero where no entry lands), so x_paired @ W_paired^T == x @ W^T exactly."""
    return to_paired_layout(weight)


def unpack_table(layout: PackingLayout) -> torch.Tensor:
    """int64 [4, 32]: per slot (1..26 = tables) the packed word, bit shift, width mask and whether the field
    straddles into the next word."""
    table = torch.zeros(4, SLOTS, dtype=torch.int64)
    for t in range(NUM_SPARSE):
        table[0, t + 1] = layout.word(t)
        table[1, t + 1] = layout.shift(t)
        table[2, t + 1] = (1 << layout.widths[t]) - 1
        table[3, t + 1] = int(layout.straddles(t))
    return table


class Interaction:
    """Device constants for the interaction kernel, and the launcher."""

    def __init__(self, qm: QuantizedDLRM, tables: "torch.Tensor | TableStore", table_offsets: torch.Tensor,
                 block_p: int = 4, num_warps: int = 4, iters: int = 1, num_stages: int = 1,
                 packing: PackingLayout | None = None, kernel: str = "triton",
                 pairs_per_warp: int = PAIRS_PER_WARP) -> None:
        """kernel: "triton", or "cuda" (plain ids and every row on the GPU; UserError otherwise,
        KernelsUnavailable where the library or the GPU cannot run it)."""
        store = tables if isinstance(tables, TableStore) else TableStore(tables)
        device = store.device
        self.mult = interaction_multiplier_tile(qm).to(device)
        self.store = store
        self.tables = store.hot
        self.offsets = table_offsets.to(device=device, dtype=torch.int64)
        self.block_p, self.num_warps, self.iters, self.num_stages = block_p, num_warps, iters, num_stages
        self.unpack = unpack_table(packing).to(device) if packing is not None else None
        if kernel not in KERNELS:
            raise UserError(f"interaction_kernel '{kernel}': choose one of {', '.join(KERNELS)}")
        self.kernel, self.pairs_per_warp = kernel, pairs_per_warp
        self.native = self._native_kernel() if kernel == "cuda" else None

    def _native_kernel(self) -> "KernelLibrary":
        """The loaded library whose CUDA kernel this interaction runs (checks what it supports first)."""
        from dlrm_bench.engines.cuda.kernel_library import hopper_kernel_library

        unsupported = [why for why, bad in (("plain ids only (compress_categorical_inputs)", self.unpack is not None),
                                            ("every row on the GPU (embedding_weights_on_gpu_part)",
                                             self.store.remap is not None)) if bad]
        if unsupported:
            raise UserError(f"interaction_kernel cuda: supports {'; '.join(unsupported)}")
        return hopper_kernel_library(self.tables.device, "interaction")

    def __call__(self, categorical: torch.Tensor, rows: torch.Tensor | None, num_pairs: int,
                 top_in: torch.Tensor) -> None:
        """categorical: int32 [N, 26] (or [N, 16] packed, when built with a packing layout); rows: int64
        [num_pairs] or None; top_in: int8 [>= num_pairs, 512] holding the dense vector in columns 0..127;
        columns 128..491 are written (paired layout)."""
        if self.native is not None:
            if num_pairs < 1:
                return
            self.native.interaction(categorical, rows, num_pairs, self.tables, self.offsets, self.mult,
                                    top_in, self.pairs_per_warp)
            return
        grid = (triton.cdiv(num_pairs, self.block_p * self.iters),)
        _interaction_kernel[grid](
            top_in, top_in.stride(0), categorical, rows if rows is not None else categorical,
            categorical.stride(0), num_pairs, self.tables, self.offsets, self.mult,
            self.store.remap if self.store.remap is not None else self.offsets,
            self.store.cold if self.store.cold is not None else self.tables,
            self.unpack if self.unpack is not None else self.offsets,
            NUM_TABLES=NUM_SPARSE, HAS_ROWS=rows is not None, HAS_COLD=self.store.remap is not None,
            PACKED=self.unpack is not None,
            BLOCK_P=self.block_p, ITERS=self.iters, NUM_STAGES=self.num_stages, num_warps=self.num_warps)
