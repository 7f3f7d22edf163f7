"""Compressed categorical inputs: exact round trips at full bit widths, the documented layout, errors."""

from __future__ import annotations

import numpy as np
import torch
import pytest

from dlrm_bench.criteo.packing import PACKED_BITS, bit_width, pack, packing_layout, unpack
from dlrm_bench.criteo.schema import CRITEO_TB_CARDINALITIES
from dlrm_bench.errors import DataError, UserError


def random_ids(cards, n, seed=0) -> np.ndarray:
    """Random ids int32 [n, T] with the extremes 0 and card - 1 in the first two rows."""
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(0, c, size=n) for c in cards], axis=1).astype(np.int32)
    ids[0] = 0
    ids[1] = np.asarray(cards) - 1
    return ids


def test_bit_widths():
    assert [bit_width(c) for c in (1, 2, 3, 4, 5, 2 ** 26, 2 ** 26 + 1, 2 ** 31)] == [0, 1, 2, 2, 3, 26, 27, 31]
    assert packing_layout(CRITEO_TB_CARDINALITIES).total_bits == 362


def test_round_trip_criteo_cardinalities():
    ids = random_ids(CRITEO_TB_CARDINALITIES, 5000)
    layout = packing_layout(CRITEO_TB_CARDINALITIES)
    packed = pack(ids, layout)
    assert packed.dtype == np.int32 and packed.shape == (5000, 16)
    np.testing.assert_array_equal(unpack(packed, layout), ids)


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_at_max_widths_filling_512_bits(seed):
    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 32, size=26)  # ids are int32: at most 31 bits
    while widths.sum() != PACKED_BITS:  # nudge random fields until the row fills exactly 512 bits
        t = rng.integers(0, 26)
        widths[t] = np.clip(widths[t] + (1 if widths.sum() < PACKED_BITS else -1), 1, 31)
    cards = [2 ** int(w) for w in widths]  # ids use every bit of their field
    layout = packing_layout(cards)
    ids = random_ids(cards, 3000, seed)
    assert layout.total_bits == PACKED_BITS
    np.testing.assert_array_equal(unpack(pack(ids, layout), layout), ids)


def test_exactly_512_bits_fits_and_513_does_not():
    cards = [2 ** 20] * 25 + [2 ** 12]  # 500 + 12 = 512 bits
    layout = packing_layout(cards)
    assert layout.total_bits == 512
    ids = random_ids(cards, 100)
    np.testing.assert_array_equal(unpack(pack(ids, layout), layout), ids)
    with pytest.raises(UserError, match="need 513 bits"):
        packing_layout([2 ** 20] * 25 + [2 ** 13])


def test_documented_bit_layout():
    cards = [16, 2 ** 30, 2] + [1] * 23  # widths 4, 30, 1, then 0
    layout = packing_layout(cards)
    assert layout.offsets[:4] == (0, 4, 34, 35) and layout.straddles(1) and not layout.straddles(2)
    ids = np.zeros((1, 26), np.int32)
    ids[0, :3] = [0xA, 2 ** 30 - 1, 1]
    packed = pack(ids, layout)
    assert packed[0, 0] == np.int32(np.uint32(0xFFFFFFFA).view(np.int32))  # 0xA | ones << 4
    assert packed[0, 1] == 0b111 and not packed[0, 2:].any()  # the field's last 2 bits, then the 1-bit field


def test_ids_out_of_range_are_an_error():
    layout = packing_layout(CRITEO_TB_CARDINALITIES)
    ids = random_ids(CRITEO_TB_CARDINALITIES, 10)
    ids[3, 5] = 3  # table 5 has 3 rows
    with pytest.raises(DataError, match="table 5"):
        pack(ids, layout)
    ids[3, 5] = -1
    with pytest.raises(DataError, match="table 5"):
        pack(ids, layout)


def test_torch_unpack_matches_numpy():
    torch = pytest.importorskip("torch")
    layout = packing_layout(CRITEO_TB_CARDINALITIES)
    ids = random_ids(CRITEO_TB_CARDINALITIES, 1000, seed=3)
    out = unpack_torch(torch.from_numpy(pack(ids, layout)), layout)
    np.testing.assert_array_equal(out.numpy(), ids)


def test_pack_torch_matches_numpy_pack() -> None:
    import torch

    from dlrm_bench.criteo.packing import pack, pack_torch, packing_layout
    from dlrm_bench.criteo.schema import CRITEO_TB_CARDINALITIES

    rng = np.random.default_rng(3)
    ids = np.stack([rng.integers(0, c, 1000) for c in CRITEO_TB_CARDINALITIES], 1).astype(np.int32)
    ids[0] = np.array(CRITEO_TB_CARDINALITIES) - 1  # every field at its widest value
    layout = packing_layout(CRITEO_TB_CARDINALITIES)
    np.testing.assert_array_equal(pack_torch(torch.from_numpy(ids), layout).numpy(), pack(ids, layout))


def unpack_torch(packed: torch.Tensor, layout) -> torch.Tensor:
    """torch int32 [N, 16] -> int64 [N, T] ids: the arithmetic the interaction kernel does on the GPU."""
    words = packed.to(torch.int64) & 0xFFFFFFFF
    cols = []
    for t, width in enumerate(layout.widths):
        w, s = layout.word(t), layout.shift(t)
        v = words[:, w] >> s
        if layout.straddles(t):
            v = v | (words[:, w + 1] << (32 - s))
        cols.append(v & ((1 << width) - 1))
    return torch.stack(cols, dim=1)
