"""Compressed categorical inputs: a pair's 26 ids packed into 16 int32 words (64 bytes instead of 104).

Bit layout (also in docs/FORMATS.md, "Compressed categorical inputs"):

- Table t needs w_t = bit_length(cardinality_t - 1) bits (0 for a table of one row; 26 bits for 40M rows).
- The 26 fields are laid end to end, in table order, in one 512-bit little-endian bit string: field t occupies
  bits [o_t, o_t + w_t) with o_0 = 0 and o_{t+1} = o_t + w_t, least significant bit first.
- Bit b of the string is bit (b mod 32) of word (b div 32); the 16 words are stored as int32 (the bit pattern of
  uint32). Unused high bits are zero.
- A field may straddle two words: id_t = ((word[o_t >> 5] >> (o_t & 31)) | (word[(o_t >> 5) + 1] << (32 -
  (o_t & 31)))) & (2^w_t - 1), the second word only when (o_t & 31) + w_t > 32.

A dataset fits when sum(w_t) <= 512 (Criteo Terabyte at 40M needs 362 bits); otherwise `packing_layout` raises
a UserError that names the total. `pack` and `unpack` are exact inverses for 0 <= id_t < cardinality_t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dlrm_bench.errors import DataError, UserError

PACKED_WORDS = 16
"""int32 words per pair."""
PACKED_BITS = 32 * PACKED_WORDS
_ROWS_PER_STEP = 1 << 18
"""Rows packed per step (bounds the uint64 temporaries to ~32 MB)."""


@dataclass(frozen=True)
class PackingLayout:
    """Where each table's id lives: widths, bit offsets, word index and shift within the word (all int [T])."""

    cardinalities: tuple[int, ...]
    widths: tuple[int, ...]
    offsets: tuple[int, ...]

    @property
    def total_bits(self) -> int:
        return int(sum(self.widths))

    def word(self, t: int) -> int:
        return self.offsets[t] >> 5

    def shift(self, t: int) -> int:
        return self.offsets[t] & 31

    def straddles(self, t: int) -> bool:
        """True when table t's field continues into the next word."""
        return self.shift(t) + self.widths[t] > 32


def bit_width(cardinality: int) -> int:
    """Bits needed for ids 0 .. cardinality - 1."""
    if cardinality < 1:
        raise UserError(f"cardinality must be >= 1, got {cardinality}")
    return int(cardinality - 1).bit_length()


def packing_layout(cardinalities: Sequence[int]) -> PackingLayout:
    """The layout for these table sizes; a UserError when they need more than 512 bits."""
    cards = tuple(int(c) for c in cardinalities)
    widths = tuple(bit_width(c) for c in cards)
    total = sum(widths)
    if total > PACKED_BITS:
        detail = ", ".join(f"{c}:{w}" for c, w in zip(cards, widths))
        raise UserError(f"compressed categorical inputs need {total} bits per pair but the layout holds "
                        f"{PACKED_BITS} ({PACKED_WORDS} int32 words); cardinality:bits = {detail}. Use a smaller "
                        f"--max-ind-range or run without compressed inputs")
    if any(c > 2 ** 31 for c in cards):
        raise UserError(f"ids are int32: a table of more than 2**31 rows cannot be packed (cardinalities {cards})")
    offsets = tuple(int(o) for o in np.cumsum((0,) + widths[:-1]))
    return PackingLayout(cards, widths, offsets)


def pack(ids: np.ndarray, layout: PackingLayout) -> np.ndarray:
    """ids int [N, T] -> packed int32 [N, 16]. Ids outside 0 .. cardinality_t - 1 are a DataError."""
    ids = np.asarray(ids)
    _check_ids(ids, layout)
    out = np.empty((ids.shape[0], PACKED_WORDS), dtype=np.int32)
    for lo in range(0, ids.shape[0], _ROWS_PER_STEP):
        out[lo:lo + _ROWS_PER_STEP] = _pack_rows(ids[lo:lo + _ROWS_PER_STEP], layout)
    return out


def _check_ids(ids: np.ndarray, layout: PackingLayout) -> None:
    if ids.ndim != 2 or ids.shape[1] != len(layout.cardinalities):
        raise DataError(f"expected ids of shape [N, {len(layout.cardinalities)}], got {ids.shape}")
    if ids.shape[0] == 0:
        return
    low, high = ids.min(axis=0), ids.max(axis=0)
    bad = np.flatnonzero((low < 0) | (high >= np.asarray(layout.cardinalities)))
    if bad.size:
        t = int(bad[0])
        raise DataError(f"table {t}: ids {int(low[t])}..{int(high[t])} do not fit cardinality "
                        f"{layout.cardinalities[t]}")


def _pack_rows(ids: np.ndarray, layout: PackingLayout) -> np.ndarray:
    words = np.zeros((ids.shape[0], PACKED_WORDS), dtype=np.uint64)
    low32 = np.uint64(0xFFFFFFFF)
    for t in range(len(layout.widths)):
        if layout.widths[t] == 0:
            continue
        v = ids[:, t].astype(np.uint64)
        w, s = layout.word(t), layout.shift(t)
        words[:, w] |= (v << np.uint64(s)) & low32
        if layout.straddles(t):
            words[:, w + 1] |= v >> np.uint64(32 - s)
    return words.astype(np.uint32).view(np.int32)


def unpack(packed: np.ndarray, layout: PackingLayout) -> np.ndarray:
    """packed int32 [N, 16] -> ids int32 [N, T] (the exact inverse of `pack`)."""
    packed = np.asarray(packed)
    if packed.ndim != 2 or packed.shape[1] != PACKED_WORDS:
        raise DataError(f"expected packed inputs of shape [N, {PACKED_WORDS}], got {packed.shape}")
    out = np.empty((packed.shape[0], len(layout.widths)), dtype=np.int32)
    for lo in range(0, packed.shape[0], _ROWS_PER_STEP):
        out[lo:lo + _ROWS_PER_STEP] = _unpack_rows(packed[lo:lo + _ROWS_PER_STEP], layout)
    return out


def _unpack_rows(packed: np.ndarray, layout: PackingLayout) -> np.ndarray:
    words = packed.astype(np.int32, copy=False).view(np.uint32).astype(np.uint64)
    out = np.empty((packed.shape[0], len(layout.widths)), dtype=np.int32)
    for t, width in enumerate(layout.widths):
        w, s = layout.word(t), layout.shift(t)
        v = words[:, w] >> np.uint64(s)
        if layout.straddles(t):
            v |= words[:, w + 1] << np.uint64(32 - s)
        out[:, t] = v & np.uint64((1 << width) - 1)
    return out


def pack_torch(ids: Any, layout: PackingLayout) -> Any:
    """torch int [N, T] ids (any device) -> int32 [N, 16]; the same bits as `pack` (ids must be in range)."""
    import torch

    words = torch.zeros(ids.shape[0], PACKED_WORDS, dtype=torch.int64, device=ids.device)
    for t in range(len(layout.widths)):
        w, s = layout.word(t), layout.shift(t)
        v = ids[:, t].to(torch.int64)
        words[:, w] |= (v << s) & 0xFFFFFFFF
        if layout.straddles(t):
            words[:, w + 1] |= v >> (32 - s)
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)
