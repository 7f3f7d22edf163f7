"""The CUDA engine's Triton kernels against the int8 recipe's emulation (and so, indirectly, the FP32 formula).

On a GPU the kernels run for real; on a CPU-only machine Triton's interpreter runs the same kernel code, so the
kernel logic is checked in CI too. Edge sizes: 1 pair, odd counts, more pairs than one program's block, and
row indirection (non-contiguous samples).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("OpenAI Triton is not installed", allow_module_level=True)

from dlrm_bench.engines.cuda.triton_env import INTERPRETED  # noqa: E402  (first: sets the interpreter up)
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.interaction import (Interaction, paired_columns, permute_top_weight,  # noqa: E402
                                                  to_paired_layout)
from dlrm_bench.engines.cuda.row_index import expand_rows, pack_ranges, packed_length, search_steps  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import TopMLP  # noqa: E402
from dlrm_bench.quant.recipe import (emulate_bottom, emulate_interaction, emulate_top, gather_rows,  # noqa: E402
                                     quantize_numeric)
from tests.quant_fixtures import random_inputs, random_quantized  # noqa: E402

CARDS = [1000, 50, 7, 300, 2, 64, 100, 5, 3, 900, 17, 40, 10, 8, 33, 12, 4, 60, 14, 700, 500, 800, 90, 70, 6, 36]
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SIZES = [1, 7, 67] if INTERPRETED else [1, 7, 67, 1001, 65537]


@pytest.fixture(scope="module")
def model():
    return random_quantized(3, CARDS)


def assert_int8_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Exact in the interpreter; on a GPU fused multiply-adds may move a value by one step, rarely."""
    diff = (got.cpu().to(torch.int16) - want.to(torch.int16)).abs()
    if INTERPRETED:
        assert int(diff.max()) == 0
    else:
        assert int(diff.max()) <= 1
        assert float((diff > 0).float().mean()) < 0.01


@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("indirect", [False, True])
@pytest.mark.parametrize("stages", [1, 2])
def test_bottom_mlp_matches_emulation(model, batch: int, indirect: bool, stages: int) -> None:
    _, qm, _, _ = model
    numeric, _ = random_inputs(batch, batch + 5, CARDS)
    x = quantize_numeric(numeric)
    rows = torch.randperm(batch + 5)[:batch] if indirect else None
    want = emulate_bottom(qm, x[rows] if indirect else x[:batch])
    out = torch.zeros(batch, 512, dtype=torch.int8, device=DEVICE)
    BottomMLP(qm, DEVICE, num_stages=stages)(x.to(DEVICE), None if rows is None else rows.to(DEVICE), batch, out)
    assert_int8_close(out[:, :128], want)
    assert int(out[:, 128:].abs().sum()) == 0


@pytest.mark.parametrize("batch", SIZES)
def test_bottom_mlp_layer1_on_fp16_is_bit_identical(model, batch: int) -> None:
    """Layer 1 on the fp16 tensor cores (the default) against the int8 MMA: the same bytes, also for inputs at
    +-127, where the accumulators are largest."""
    _, qm, _, _ = model
    numeric, _ = random_inputs(batch, batch + 5, CARDS)
    x = quantize_numeric(numeric)
    x[::3] = 127
    x[1::3, ::2] = -127
    outs = []
    for fp16 in (True, False):
        out = torch.zeros(batch, 512, dtype=torch.int8, device=DEVICE)
        BottomMLP(qm, DEVICE, layer1_fp16=fp16)(x.to(DEVICE), None, batch, out)
        outs.append(out.cpu())
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("indirect", [False, True])
@pytest.mark.parametrize("iters", [1, 3])
def test_interaction_matches_emulation(model, batch: int, indirect: bool, iters: int) -> None:
    """Every entry lands in its column of the paired layout; the dense part and the columns past 491 are
    untouched."""
    _, qm, tables, offsets = model
    numeric, cat = random_inputs(batch + 100, batch + 5, CARDS)
    rows = torch.randperm(batch + 5)[:batch] if indirect else torch.arange(batch)
    dense = emulate_bottom(qm, quantize_numeric(numeric[rows]))
    want = to_paired_layout(emulate_interaction(qm, dense, gather_rows(tables, offsets, cat[rows])))
    top_in = torch.zeros(batch, 512, dtype=torch.int8, device=DEVICE)
    top_in[:, :128] = dense.to(DEVICE)
    op = Interaction(qm, tables.to(DEVICE), offsets, iters=iters, num_stages=2 if iters > 1 else 1)
    op(cat.to(DEVICE), rows.to(DEVICE) if indirect else None, batch, top_in)
    used = torch.cat([torch.arange(128), paired_columns()])  # the rest: diagonals, zero weights
    assert_int8_close(top_in[:, used], want[:, used])
    assert int(top_in[:, 492:].abs().max()) == 0


def test_permuted_weight_gives_the_same_products() -> None:
    """x in the recipe's order times W == the same x in the paired columns (anything in the spare columns)
    times the permuted W, exactly."""
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-127, 128, (33, 512), generator=g, dtype=torch.int8)
    x[:, 479:] = 0
    w = torch.randint(-127, 128, (64, 512), generator=g, dtype=torch.int8)
    w[:, 479:] = 0
    x_paired = to_paired_layout(x)
    spare = torch.ones(512, dtype=torch.bool)
    spare[:128] = False
    spare[paired_columns()] = False
    assert int(spare.sum()) == 512 - 128 - 351
    x_paired[:, spare] = torch.randint(-127, 128, (33, int(spare.sum())), generator=g, dtype=torch.int8)
    assert torch.equal(x_paired.long() @ permute_top_weight(w).long().T, x.long() @ w.long().T)


GEMM_VARIANTS = {"pointer": {}, "tma": {"tma": True}}
"""The hidden layers' kernels (top_mlp.GemmConfig.tma: the persistent TMA kernel with the folded epilogue)."""


@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("variant", list(GEMM_VARIANTS))
def test_top_mlp_matches_emulation(model, batch: int, variant: str) -> None:
    """The top MLP on the paired input predicts what the recipe does on its own column order."""
    _, qm, _, _ = model
    g = torch.Generator().manual_seed(batch)
    top_in = torch.randint(-40, 40, (batch, 512), generator=g, dtype=torch.int8)
    top_in[:, 479:] = 0
    want = emulate_top(qm, top_in)
    top = TopMLP(qm, DEVICE)
    for cfg in top.configs[:-1]:
        for flag, value in GEMM_VARIANTS[variant].items():
            setattr(cfg, flag, value)
    buffers = [torch.empty(batch, w, dtype=torch.int8, device=DEVICE) for w in top.widths]
    probs = torch.empty(batch, dtype=torch.float32, device=DEVICE)
    top(to_paired_layout(top_in).to(DEVICE), buffers, probs, batch)
    tol = 1e-6 if INTERPRETED and variant == "pointer" else 2e-2
    assert torch.allclose(probs.cpu(), want, atol=tol), float((probs.cpu() - want).abs().max())


def test_a_layer_reads_the_columns_in_the_order_the_one_before_stored_them(model) -> None:
    """With the "_permuted" CUTLASS variant on the hidden layers, each layer after one reads its K columns in the
    stored order: the stored activations times the reordered weight are the logical product exactly; the first
    layer's weight is untouched and the epilogue vectors follow the stored order."""
    from dlrm_bench.engines.cuda.kernel_library import physical_column_order

    top = TopMLP(model[1], DEVICE)
    assert top.stored_order(0) is None and top.input_weight(1) is top.w[1]
    for cfg in top.configs[:-1]:
        cfg.cutlass = "128x128_c1x2_pingpong_fma_permuted"
    top.prepare_column_orders()
    assert top.input_weight(0) is top.w[0] and top.stored_order(len(top.w) - 1) is None
    g = torch.Generator().manual_seed(5)
    for i in range(1, len(top.w)):
        order = physical_column_order(top.w[i - 1].shape[0])
        assert torch.equal(top.stored_order(i - 1), order)
        x = torch.randint(-128, 128, (9, top.w[i].shape[1]), generator=g, dtype=torch.int8)
        stored = x[:, order]
        got = stored.int() @ top.input_weight(i).cpu().int().T
        assert torch.equal(got, x.int() @ top.w[i].cpu().int().T)
    mul, add = top._epilogue_vectors(0)
    order = physical_column_order(top.w[0].shape[0]).to(mul.device)
    assert torch.equal(mul, top.folded_mul[0][order]) and torch.equal(add, top.folded_add[0][order])
    top.configs[1].cutlass = top.configs[2].cutlass = "128x128_c1x2_pingpong_fma_smemrows_e64x128"  # first only
    assert top.stored_order(1) is None and top.input_weight(2) is top.w[2]
    assert top._epilogue_vectors(1)[0] is top.folded_mul[1]


def test_a_tile_that_does_not_divide_the_layer_is_refused(model) -> None:
    _, qm, _, _ = model
    top = TopMLP(qm, DEVICE)
    top.configs[-1].block_n = 96
    x = torch.zeros(4, 512, dtype=torch.int8, device=DEVICE)
    message = r"top layer 3: a 96 x \d+ tile must divide its weight \[N, K\] = \[256, 512\]"
    with pytest.raises(ValueError, match=message):
        top.layer(3, x, torch.empty(4, device=DEVICE), 4)


@pytest.mark.parametrize("batch", SIZES)
def test_folded_epilogue_is_within_one_step(model, batch: int) -> None:
    """The folded epilogue (one multiply-add per element) against the recipe's requantization, layer by layer."""
    from dlrm_bench.quant.recipe import int8_linear, requantize

    _, qm, _, _ = model
    g = torch.Generator().manual_seed(batch + 1)
    x = torch.randint(-40, 40, (batch, 512), generator=g, dtype=torch.int8)
    x[:, 479:] = 0
    top = TopMLP(qm, DEVICE)
    for i, width in enumerate(top.widths):
        top.configs[i].tma = True
        out = torch.empty(batch, width, dtype=torch.int8, device=DEVICE)
        top.layer(i, (to_paired_layout(x) if i == 0 else x).to(DEVICE), out, batch)
        want = requantize(int8_linear(x, qm.top[i]), qm.top[i].act_inv)
        diff = (out.cpu().to(torch.int16) - want.to(torch.int16)).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01
        x = want


@pytest.mark.parametrize("part", [0.05, 0.5])
def test_hot_cold_store_gives_identical_top_input(model, part: float, tmp_path) -> None:
    """Hot rows on the device, cold rows in (pinned) host memory: the same bytes as all rows on the device."""
    import numpy as np

    from dlrm_bench.criteo.frequencies import write_row_frequencies
    from dlrm_bench.engines.cuda.table_store import build_store

    _, qm, tables, offsets = model
    rng = np.random.default_rng(0)
    counts = [rng.zipf(1.5, n).astype(np.float64) for n in CARDS]
    freq_file = tmp_path / "row_frequencies.bin"
    write_row_frequencies(freq_file, counts)
    store = build_store(tables.numpy(), part, DEVICE, freq_file, CARDS)
    assert store.cold is not None and 0 < store.hot.shape[0] < tables.shape[0]
    batch = 67
    numeric, cat = random_inputs(5, batch, CARDS)
    dense = emulate_bottom(qm, quantize_numeric(numeric))
    outs = []
    for source in (tables.to(DEVICE), store):
        top_in = torch.zeros(batch, 512, dtype=torch.int8, device=DEVICE)
        top_in[:, :128] = dense.to(DEVICE)
        Interaction(qm, source, offsets)(cat.to(DEVICE), None, batch, top_in)
        outs.append(top_in.cpu())
    assert torch.equal(outs[0], outs[1])
    frac = store.device_lookup_fraction(cat.to(DEVICE), offsets)
    assert 0.0 < frac <= 1.0


@pytest.mark.parametrize("indirect", [False, True])
def test_packed_ids_are_unpacked_in_the_kernel(model, indirect: bool) -> None:
    from dlrm_bench.criteo.packing import pack, packing_layout

    _, qm, tables, offsets = model
    batch = 67
    numeric, cat = random_inputs(9, batch + 3, CARDS)
    layout = packing_layout(CARDS)
    packed = torch.from_numpy(pack(cat.numpy(), layout))
    rows = torch.randperm(batch + 3)[:batch] if indirect else None
    dense = emulate_bottom(qm, quantize_numeric(numeric))
    outs = []
    for ids, lay in ((cat, None), (packed, layout)):
        top_in = torch.zeros(batch + 3, 512, dtype=torch.int8, device=DEVICE)
        top_in[:, :128] = dense.to(DEVICE)
        Interaction(qm, tables.to(DEVICE), offsets, packing=lay)(ids.to(DEVICE), None if rows is None else rows.to(DEVICE), batch, top_in)
        outs.append(top_in.cpu())
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("lengths", [[1], [5], [3, 1, 4], [1] * 300, [700, 1, 2, 699, 100], "random"])
def test_row_index_kernel_matches_the_ranges(lengths) -> None:
    """One sample, single-pair samples, odd counts, batches over one program's block, unsorted starts; rows past
    the batch: row 0 up to the rows asked for (a CUDA graph's bucket), nothing written beyond."""
    import numpy as np

    from dlrm_bench.engines.base import ranges_to_rows

    rng = np.random.default_rng(len(str(lengths)))
    lengths = rng.integers(1, 700, size=40) if lengths == "random" else np.asarray(lengths)
    starts = rng.integers(1, 10_000, size=len(lengths)).astype(np.int64)
    ends = starts + lengths
    packed = np.full(packed_length(len(starts)) + 3, -7, dtype=np.int64)
    n = pack_ranges(starts, ends, packed)
    assert n == int(lengths.sum()) and packed[0] == len(starts) and packed[1] == n
    assert (packed[packed_length(len(starts)):] == -7).all()
    packed_dev = torch.from_numpy(packed).to(DEVICE)
    for extra in (0, 1, 1100):
        rows = torch.full((n + extra + 5,), -1, dtype=torch.int64, device=DEVICE)
        expand_rows(packed_dev, rows, n + extra, search_steps(262144))
        got = rows.cpu().numpy()
        np.testing.assert_array_equal(got[:n], ranges_to_rows(starts, ends))
        assert (got[n:n + extra] == 0).all()
        assert (got[n + extra:] == -1).all()  # nothing past the rows asked for is written

@pytest.mark.parametrize("max_pairs,buckets,want", [(1024, 4, [256, 512, 768, 1024]), (262144, 1, [262144]),
                                                    (1000, 3, [384, 768, 1000]), (200, 16, [128, 200])])
def test_graph_bucket_sizes(max_pairs: int, buckets: int, want: list[int]) -> None:
    """CUDA-graph sizes: even steps up to the batch size, whole GEMM tiles of 128 pairs, the batch size last."""
    from dlrm_bench.engines.cuda.engine import graph_bucket_sizes

    assert graph_bucket_sizes(max_pairs, buckets) == want
