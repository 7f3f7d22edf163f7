"""The native kernel library's CUTLASS top-MLP GEMMs (csrc/top_gemm_cutlass.cu, csrc/final_layer_cutlass.cu via
engines/cuda/kernel_library.py) against the int8 recipe: each layer within one int8 step of the recipe's
requantization (the folded epilogue), and the whole top MLP's probabilities. Edge sizes: 1 pair, odd counts, a
partial last tile, the largest batch the engine uses. The variants the library was built with are tested (`make
kernels`: the configs' two; GEMM_VARIANTS=all: the baselines and other tile shapes too).

Needs a CUDA GPU and the built library; the load errors are checked everywhere.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dlrm_bench.engines.cuda.interaction import to_paired_layout
from dlrm_bench.engines.cuda.kernel_library import VARIANTS, KernelLibrary, KernelsUnavailable, library_path

CARDS = [1000, 50, 7, 300, 2, 64, 100, 5, 3, 900, 17, 40, 10, 8, 33, 12, 4, 60, 14, 700, 500, 800, 90, 70, 6, 36]
SIZES = [1, 7, 67, 1001, 65537, 262144]


def in_stored_order(x: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """x [rows, N] in logical column order -> stored order `order` (physical_column_order; None: unchanged)."""
    return x if order is None else x[:, order.to(x.device)]


def in_logical_order(stored: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """The inverse of in_stored_order: stored [rows, N] -> logical column order."""
    if order is None:
        return stored
    logical = torch.empty_like(stored)
    logical[:, order.to(stored.device)] = stored
    return logical


def test_a_missing_library_is_named(tmp_path) -> None:
    missing = tmp_path / "libnothing.so"
    with pytest.raises(KernelsUnavailable, match=r"libnothing\.so: no native kernel library.*make kernels"):
        KernelLibrary(missing)


def test_a_file_that_is_not_a_library_is_refused(tmp_path) -> None:
    bad = tmp_path / "libbad.so"
    bad.write_bytes(b"not an ELF file")
    with pytest.raises(KernelsUnavailable, match=r"libbad\.so: cannot load"):
        KernelLibrary(bad)


def test_each_hidden_variant_names_its_final_layer_kernel() -> None:
    from dlrm_bench.engines.cuda.kernel_library import final_layer_variant

    assert [final_layer_variant(v) for v in VARIANTS] == [0, 0, 1, 1, 0, 0, 0, 0]
    assert list(VARIANTS)[:2] == ["128x128_c1x2_pingpong_fma_smemrows_e64x128", "128x128_c1x2_pingpong_fma_permuted"]


def test_the_permuted_column_order_puts_each_threads_values_side_by_side() -> None:
    """physical_column_order is a permutation of each 128-column tile on its own, and the 16 columns that lane
    quarter q of a wgmma accumulator holds in half h of a row (logical 8 j + 2 q + k, j = 8 h .. 8 h + 7) are the
    physical columns 64 h + 16 q .. 64 h + 16 q + 15, in order of j then k."""
    from dlrm_bench.engines.cuda.kernel_library import physical_column_order, stores_permuted

    order = physical_column_order(384)
    assert sorted(order.tolist()) == list(range(384))
    assert all(set(order[t:t + 128].tolist()) == set(range(t, t + 128)) for t in (0, 128, 256))
    for h in range(2):
        for q in range(4):
            want = [8 * j + 2 * q + k for j in range(8 * h, 8 * h + 8) for k in range(2)]
            assert order[64 * h + 16 * q:64 * h + 16 * q + 16].tolist() == want
    assert order[128 + 17].item() == 128 + order[17].item()
    assert stores_permuted("128x128_c1x2_pingpong_fma_permuted")
    assert not stores_permuted("128x128_c1x2_pingpong_fma_smemrows_e64x128")
    with pytest.raises(ValueError, match="multiple of 128 columns, got 100"):
        physical_column_order(100)


NO_GPU = not torch.cuda.is_available()
NO_LIBRARY = not library_path().is_file()
NO_TRITON = importlib.util.find_spec("triton") is None
PERMUTED = "128x128_c1x2_pingpong_fma_permuted"
SHIPPED = "128x128_c1x2_pingpong_fma_smemrows_e64x128"


def built_variants() -> list[str]:
    """The variants this library holds (none without a GPU or a loadable library: those tests skip or fail)."""
    try:
        return [] if NO_GPU or NO_LIBRARY else [v for v in VARIANTS if KernelLibrary().has_variant(v)]
    except KernelsUnavailable:
        return []


BUILT = built_variants()


def on_gpu(test):
    """GPU test marks: the gpu marker, and skips without CUDA, the library or Triton (the final layer)."""
    test = pytest.mark.skipif(NO_TRITON, reason="the final layer runs in OpenAI Triton")(test)
    test = pytest.mark.skipif(NO_LIBRARY, reason="needs the native kernel library (make kernels)")(test)
    test = pytest.mark.skipif(NO_GPU, reason="needs a CUDA GPU")(test)
    return pytest.mark.gpu(test)


@pytest.fixture(scope="module")
def model():
    from tests.quant_fixtures import random_quantized
    return random_quantized(3, CARDS)


def _top(qm, variant: str):
    from dlrm_bench.engines.cuda.top_mlp import TopMLP
    top = TopMLP(qm, torch.device("cuda"))
    for cfg in top.configs[:-1]:
        cfg.cutlass = variant
    return top


def _top_input(batch: int, seed: int) -> torch.Tensor:
    """int8 [batch, 512] in the recipe's column order, columns 479+ zero (the interaction's padding); the top MLP
    reads it as to_paired_layout(x)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-40, 40, (batch, 512), generator=g, dtype=torch.int8)
    x[:, 479:] = 0
    return x


_REFERENCE: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}


def _reference_layers(qm, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input as the layer reads it, recipe output) of each hidden layer on a random top input of `batch` rows, once
    per batch."""
    from dlrm_bench.quant.recipe import int8_linear, requantize

    if batch not in _REFERENCE:
        x, layers = _top_input(batch, batch + 11), []
        for i, layer in enumerate(qm.top[:-1]):
            want = requantize(int8_linear(x, layer), layer.act_inv)
            layers.append((to_paired_layout(x) if i == 0 else x, want))
            x = want
        _REFERENCE[batch] = layers
    return _REFERENCE[batch]


@on_gpu
@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("variant", BUILT or [SHIPPED])
def test_hidden_layers_are_within_one_step(model, batch: int, variant: str) -> None:
    _, qm, _, _ = model
    top = _top(qm, variant)
    for i, (x, want) in enumerate(_reference_layers(qm, batch)):
        out = torch.full((batch + 3, want.shape[1]), 99, dtype=torch.int8, device="cuda")
        top.layer(i, in_stored_order(x, top.stored_order(i - 1)).cuda(), out, batch)
        got = in_logical_order(out[:batch].cpu(), top.stored_order(i))
        diff = (got.to(torch.int16) - want.to(torch.int16)).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01, (i, int(diff.max()))
        assert bool((out[batch:] == 99).all()), f"layer {i} wrote past row {batch}"


@on_gpu
@pytest.mark.parametrize("batch", [1, 67, 65537])
@pytest.mark.parametrize("variant", BUILT or [SHIPPED])
def test_top_mlp_matches_emulation(model, batch: int, variant: str) -> None:
    from dlrm_bench.quant.recipe import emulate_top

    _, qm, _, _ = model
    x = _top_input(batch, batch)
    want = emulate_top(qm, x)
    top = _top(qm, variant)
    buffers = [torch.empty(batch, w, dtype=torch.int8, device="cuda") for w in top.widths]
    probs = torch.empty(batch, dtype=torch.float32, device="cuda")
    top(to_paired_layout(x).cuda(), buffers, probs, batch)
    assert torch.allclose(probs.cpu(), want, atol=2e-2), float((probs.cpu() - want).abs().max())


@on_gpu
def test_the_layer_replays_in_a_cuda_graph(model) -> None:
    """Captured once, replayed on new input bytes in the same buffers: the result follows the input."""
    _, qm, _, _ = model
    top = _top(qm, SHIPPED)
    x = _top_input(300, 1).cuda()
    out = torch.empty(300, top.widths[0], dtype=torch.int8, device="cuda")
    top.layer(0, x, out, 300)  # warm: library loaded, workspace allocated
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        top.layer(0, x, out, 300)
    x.copy_(_top_input(300, 2).cuda())
    graph.replay()
    want = torch.empty_like(out)
    top.layer(0, x, want, 300)
    torch.cuda.synchronize()
    assert torch.equal(out, want)


@on_gpu
@pytest.mark.parametrize("batch", SIZES)
@pytest.mark.parametrize("variant", BUILT or [SHIPPED])
def test_final_layer_matches_triton_and_emulation(model, batch: int, variant: str) -> None:
    """The CUTLASS final layer (the 256 -> 1 dot in the GEMM's epilogue, row sums added atomically) on the Triton
    path's own input: the recipe's probabilities, and the Triton final layer's to float rounding."""
    from dlrm_bench.engines.cuda.top_mlp import TopMLP
    from dlrm_bench.quant.recipe import emulate_top

    _, qm, _, _ = model
    x = _top_input(batch, batch + 5)
    want = emulate_top(qm, x)
    probs = {}
    for final in (False, True):
        top = TopMLP(qm, torch.device("cuda"))
        if final:
            top.configs[-1].cutlass = variant
        buffers = [torch.empty(batch, w, dtype=torch.int8, device="cuda") for w in top.widths]
        probs[final] = torch.full((batch + 2,), -1.0, device="cuda")
        top(to_paired_layout(x).cuda(), buffers, probs[final], batch)
    got = probs[True].cpu()
    assert torch.allclose(got[:batch], probs[False][:batch].cpu(), atol=1e-5, rtol=0)
    assert torch.allclose(got[:batch], want, atol=2e-2), float((got[:batch] - want).abs().max())
    assert bool((got[batch:] == -1.0).all()), "wrote past the batch"


@on_gpu
def test_a_whole_row_variant_refuses_more_than_1024_columns(model) -> None:
    """The "_smemrows" epilogue holds alpha and bias for at most 1,024 columns: a wider layer is refused with the
    library's shape error, not run past its shared memory."""
    from dlrm_bench.engines.cuda.kernel_library import kernel_library

    x = _top_input(64, 3).cuda()
    w = torch.ones(1152, 512, dtype=torch.int8, device="cuda")
    out = torch.empty(64, 1152, dtype=torch.int8, device="cuda")
    ones = torch.ones(1152, device="cuda")
    with pytest.raises(RuntimeError, match=r"fma_smemrows_e64x128 on \[64, 512\] x \[1152, 512\].*N <= 1024"):
        kernel_library()(SHIPPED, x, w, out, ones, ones, 64, 132)


@on_gpu
@pytest.mark.parametrize("batch", [1, 67, 65537, 524288, 1048576])  # edges and the configs' batches
@pytest.mark.parametrize("first_only", [False, True])
def test_permuted_stores_are_the_shipped_bytes_in_their_order(model, batch: int, first_only: bool) -> None:
    """The register-to-global epilogue ("_permuted") against the shipped TMA-store epilogue, with the CUTLASS final
    layer, on every hidden layer or (first_only) on the first: each hidden layer's bytes, once put back in logical
    order, are the same, nothing is written past the batch, and the probabilities are equal."""
    from dlrm_bench.engines.cuda.top_mlp import use_cutlass_hidden_layers

    _, qm, _, _ = model
    x = to_paired_layout(_top_input(batch, batch + 21)).cuda()
    results = []
    for variant in (SHIPPED, PERMUTED):
        top = _top(qm, variant)
        if first_only and variant == PERMUTED:
            use_cutlass_hidden_layers(top, SHIPPED, final_layer=True, first_layer=PERMUTED)
        else:
            top.configs[-1].cutlass = variant
        buffers = [torch.full((batch + 2, w), 99, dtype=torch.int8, device="cuda") for w in top.widths]
        probs = torch.full((batch + 2,), -1.0, device="cuda")
        top(x, buffers, probs, batch)
        assert all(bool((b[batch:] == 99).all()) for b in buffers), f"{variant} wrote past row {batch}"
        logical = [in_logical_order(b[:batch], top.stored_order(i)) for i, b in enumerate(buffers)]
        results.append((logical, probs))
    (shipped, shipped_probs), (permuted, permuted_probs) = results
    for i, (a, b) in enumerate(zip(shipped, permuted)):
        assert torch.equal(a, b), f"layer {i}: {int((a != b).sum())} bytes differ"
    assert torch.equal(shipped_probs, permuted_probs)


@on_gpu
def test_the_permuted_variant_refuses_a_width_that_is_not_whole_tiles(model) -> None:
    from dlrm_bench.engines.cuda.kernel_library import kernel_library

    x = _top_input(64, 4).cuda()
    w = torch.ones(1040, 512, dtype=torch.int8, device="cuda")
    out = torch.empty(64, 1040, dtype=torch.int8, device="cuda")
    ones = torch.ones(1040, device="cuda")
    with pytest.raises(RuntimeError, match=r"fma_permuted on \[64, 512\] x \[1040, 512\].*multiple of 128"):
        kernel_library()(PERMUTED, x, w, out, ones, ones, 64, 132)
