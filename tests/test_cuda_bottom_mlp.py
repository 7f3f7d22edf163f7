"""The CUDA bottom MLP (csrc/bottom_mlp_wgmma.cu, BottomMLP(kernel="cuda")) against the Triton kernel: the same
bytes in the whole top-MLP input buffer (columns 128.. and rows past the batch untouched), with and without row
indirection, for 13- and 16-column numeric inputs. Edge sizes: 1 pair, partial 64-row tiles (63, 65, odd counts),
more tiles than two per SM, the largest batch the engine uses. And the shared-memory image's layout, on the CPU.

The GPU tests need a Hopper GPU and the built library (`make kernels`).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("triton") is None:
    pytest.skip("OpenAI Triton is not installed", allow_module_level=True)

from dlrm_bench.engines.cuda.bottom_mlp import K_PERMUTATION, BottomMLP, wgmma_image  # noqa: E402
from dlrm_bench.errors import UserError  # noqa: E402
from dlrm_bench.quant.recipe import emulate_bottom, quantize_numeric  # noqa: E402
from tests.hopper import hopper_test  # noqa: E402
from tests.quant_fixtures import random_inputs, random_quantized  # noqa: E402

CARDS = [1000, 50, 7, 300, 2, 64, 100, 5, 3, 900, 17, 40, 10, 8, 33, 12, 4, 60, 14, 700, 500, 800, 90, 70, 6, 36]
LARGEST = 1048576
"""The largest batch the configs run (the H100x1 Offline and multi-GPU configs' gpu_batch_size)."""
SIZES = [1, 7, 63, 64, 65, 1001, 65537, LARGEST]


@pytest.fixture(scope="module")
def model():
    return random_quantized(5, CARDS)


def test_the_permutation_is_the_fragment_packing() -> None:
    """Position 16h + 4t + i of a k block holds accumulator column 8 * (2h + i // 2) + 2t + i % 2: what lane t
    packs from its two columns of groups 2h and 2h + 1."""
    assert sorted(K_PERMUTATION.tolist()) == list(range(32))
    for h in range(2):
        for t in range(4):
            for i in range(4):
                assert int(K_PERMUTATION[16 * h + 4 * t + i]) == 8 * (2 * h + i // 2) + 2 * t + i % 2


def test_the_image_puts_each_weight_where_the_descriptors_point(model) -> None:
    _, qm, _, _ = model
    image = wgmma_image(qm)
    assert image.dtype == torch.uint8 and image.numel() == 190_976
    w2 = qm.bottom[1].weight
    for n, s, k in [(0, 0, 0), (9, 1, 5), (255, 15, 31), (100, 7, 16)]:  # weight row n, block s, position k
        at = 16384 + s * 8192 + (n // 8) * 256 + (k // 16) * 128 + (n % 8) * 16 + k % 16
        assert int(image[at].view(torch.int8)) == int(w2[n, 32 * s + K_PERMUTATION[k]])
    w1_row_3 = image[:16384].view(torch.float16)[(3 % 8) * 8: (3 % 8) * 8 + 8]  # row 3, k 0..7: core matrix 0
    assert torch.equal(w1_row_3, qm.bottom[0].weight[3, :8].to(torch.float16))
    act_inv_3 = image[-128 * 4:].view(torch.float32)
    assert torch.equal(act_inv_3, qm.bottom[2].act_inv.float())


def test_an_unknown_kernel_is_named(model) -> None:
    _, qm, _, _ = model
    with pytest.raises(UserError, match="bottom_kernel 'cutlass': choose one of triton, cuda"):
        BottomMLP(qm, torch.device("cpu"), kernel="cutlass")


def _buffer(batch: int, seed: int) -> torch.Tensor:
    """int8 [batch + 3, 512] of random bytes, as a reused buffer holds."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-128, 128, (batch + 3, 512), generator=g, dtype=torch.int8).cuda()


@hopper_test
@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("indirect", [False, True])
@pytest.mark.parametrize("columns", [13, 16])
def test_cuda_kernel_writes_the_triton_kernels_bytes(model, batch: int, indirect: bool, columns: int) -> None:
    if batch == LARGEST and (columns != 13 or not indirect):
        pytest.skip("the largest batch once, as the engine runs it")
    _, qm, _, _ = model
    numeric, _ = random_inputs(batch + 9, batch + 50, CARDS)
    x = torch.zeros(batch + 50, columns, dtype=torch.int8)
    x[:, :13] = quantize_numeric(numeric)
    rows = torch.randperm(batch + 50)[:batch] if indirect else None
    dev_x, dev_rows = x.cuda(), rows.cuda() if indirect else None
    want, got = _buffer(batch, batch), _buffer(batch, batch)
    BottomMLP(qm, torch.device("cuda"))(dev_x, dev_rows, batch, want)
    BottomMLP(qm, torch.device("cuda"), kernel="cuda")(dev_x, dev_rows, batch, got)
    torch.cuda.synchronize()
    assert torch.equal(got, want), int((got != want).sum())
    if batch <= 1001:
        picked = x[rows] if indirect else x[:batch]
        diff = (got[:batch, :128].cpu().to(torch.int16) - emulate_bottom(qm, picked[:, :13]).to(torch.int16)).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01


@hopper_test
def test_an_empty_batch_writes_nothing(model) -> None:
    _, qm, _, _ = model
    out = _buffer(0, 3)
    before = out.clone()
    BottomMLP(qm, torch.device("cuda"), kernel="cuda")(torch.zeros(4, 13, dtype=torch.int8).cuda(), None, 0, out)
    torch.cuda.synchronize()
    assert torch.equal(out, before)
