"""The CUDA gather + interaction kernel (csrc/interaction_mma.cu, Interaction(kernel="cuda")) against the Triton
kernel in the paired layout: the same bytes in the whole top-MLP input buffer (so nothing is written outside the
entries' columns or past the batch), and the recipe's emulation. Edge sizes: 1 pair, odd counts, partial warps
(pairs per warp 1, 3, 16), the large batches with the configs' settings; with and without row indirection.

Needs a Hopper GPU and the built library (`make kernels`), except the refusals at the top.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("OpenAI Triton is not installed", allow_module_level=True)

from dlrm_bench.engines.cuda.interaction import Interaction, paired_columns, to_paired_layout  # noqa: E402
from dlrm_bench.errors import UserError  # noqa: E402
from dlrm_bench.quant.recipe import emulate_bottom, emulate_interaction, gather_rows, quantize_numeric  # noqa: E402
from tests.hopper import hopper_test  # noqa: E402
from tests.quant_fixtures import random_inputs, random_quantized  # noqa: E402

CARDS = [1000, 50, 7, 300, 2, 64, 100, 5, 3, 900, 17, 40, 10, 8, 33, 12, 4, 60, 14, 700, 500, 800, 90, 70, 6, 36]
LARGEST = 1048576
"""The largest batch the configs run (the H100x1 Offline and multi-GPU configs' gpu_batch_size)."""
SIZES = [1, 7, 67, 1001, 65537, LARGEST]


@pytest.fixture(scope="module")
def model():
    return random_quantized(4, CARDS)


def test_what_the_cuda_kernel_cannot_do_is_refused(model, tmp_path) -> None:
    """Packed ids and a hot/cold table store are the Triton kernel's alone."""
    import numpy as np

    from dlrm_bench.criteo.frequencies import write_row_frequencies
    from dlrm_bench.criteo.packing import packing_layout
    from dlrm_bench.engines.cuda.table_store import build_store

    _, qm, tables, offsets = model
    with pytest.raises(UserError, match=r"interaction_kernel cuda: supports plain ids only"):
        Interaction(qm, tables, offsets, packing=packing_layout(CARDS), kernel="cuda")
    write_row_frequencies(tmp_path / "f.bin", [np.ones(n) for n in CARDS])
    store = build_store(tables.numpy(), 0.5, torch.device("cpu"), tmp_path / "f.bin", CARDS)
    with pytest.raises(UserError, match=r"interaction_kernel cuda: supports every row on the GPU"):
        Interaction(qm, store, offsets, kernel="cuda")


def test_an_unknown_kernel_is_named(model) -> None:
    _, qm, tables, offsets = model
    with pytest.raises(UserError, match="interaction_kernel 'cutlass': choose one of triton, cuda"):
        Interaction(qm, tables, offsets, kernel="cutlass")


def _buffers(batch: int, dense: torch.Tensor, seed: int) -> torch.Tensor:
    """int8 [batch + 3, 512] of random bytes (what a reused buffer holds) with the dense vectors in columns
    0..127 of the first `batch` rows."""
    g = torch.Generator().manual_seed(seed)
    top_in = torch.randint(-128, 128, (batch + 3, 512), generator=g, dtype=torch.int8)
    top_in[:batch, :128] = dense
    return top_in.cuda()


@hopper_test
@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("indirect", [False, True])
@pytest.mark.parametrize("pairs_per_warp", [1, 3, 16])
def test_cuda_kernel_writes_the_triton_kernels_bytes(model, batch: int, indirect: bool, pairs_per_warp: int
                                                     ) -> None:
    if batch >= 65537 and (pairs_per_warp != 16 or not indirect):
        pytest.skip("the large batches with the configs' runs only (16 pairs per warp, rows indirect)")
    _, qm, tables, offsets = model
    numeric, cat = random_inputs(batch + 200, batch + 5, CARDS)
    rows = torch.randperm(batch + 5)[:batch] if indirect else torch.arange(batch)
    dense = emulate_bottom(qm, quantize_numeric(numeric[rows]))
    dev_tables, dev_cat = tables.cuda(), cat.cuda()
    dev_rows = rows.cuda() if indirect else None
    want = _buffers(batch, dense, batch)
    Interaction(qm, dev_tables, offsets)(dev_cat, dev_rows, batch, want)
    got = _buffers(batch, dense, batch)
    Interaction(qm, dev_tables, offsets, kernel="cuda", pairs_per_warp=pairs_per_warp)(
        dev_cat, dev_rows, batch, got)
    torch.cuda.synchronize()
    assert torch.equal(got, want), int((got != want).sum())
    if batch <= 1001:
        emulated = to_paired_layout(emulate_interaction(qm, dense, gather_rows(tables, offsets, cat[rows])))
        used = paired_columns()
        diff = (got[:batch, used].cpu().to(torch.int16) - emulated[:, used].to(torch.int16)).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01


@hopper_test
def test_an_empty_batch_leaves_the_buffer_alone(model) -> None:
    _, qm, tables, offsets = model
    _, cat = random_inputs(10, 10, CARDS)
    top_in = _buffers(0, torch.zeros(0, 128, dtype=torch.int8), 5)
    before = top_in.clone()
    Interaction(qm, tables.cuda(), offsets, kernel="cuda")(cat.cuda(), None, 0, top_in)
    torch.cuda.synchronize()
    assert torch.equal(top_in, before)
