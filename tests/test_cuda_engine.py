"""The CUDA engine as a whole (GPU only): split files, calibration, bundles, chunking, row indirection, and a
LoadGen accuracy run through the harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrm_bench.cli import main as cli
from dlrm_bench.criteo.dataset import load_meta, open_split
from dlrm_bench.engines import create_engine
from dlrm_bench.engines.base import chunk_ranges
from dlrm_bench.quant.artifacts import load_int8_model
from dlrm_bench.quant.recipe import emulate_forward
from dlrm_bench.settings import Settings
from tests.conftest import make_workspace

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
SHIPPED_GEMM = "128x128_c1x2_pingpong_fma_smemrows_e64x128"
"""The hidden-layer kernel of the H100/H200 configs (built by `make kernels` by default)."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_workspace(tmp_path_factory.mktemp("cuda"), test_rows=5000, rows_per_day=500, calibration_rows=2000,
                          max_sample=60, model_seed=1)


def test_engine_matches_int8_emulation(workspace, monkeypatch) -> None:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"]))
    meta = load_meta(workspace["data"])
    split = open_split(workspace["data"] / "test")
    int8 = load_int8_model(workspace["model"], meta)
    numeric_q = torch.from_numpy(np.load(workspace["data"] / "test" / "numeric_int8_linear.npy"))
    want = emulate_forward(int8.quantized, torch.from_numpy(np.asarray(int8.tables)),
                           torch.from_numpy(int8.table_offsets), numeric_q, torch.from_numpy(np.asarray(split.categorical)))
    variants = [{"start_from_device": True}, {"start_from_device": False},
                {"start_from_device": False, "compress_categorical_inputs": True},
                {"start_from_device": True, "compress_categorical_inputs": True},
                {"start_from_device": True, "embedding_weights_on_gpu_part": 0.3},
                {"start_from_device": False, "embedding_weights_on_gpu_part": 0.05}]
    for variant in variants:
        engine = create_engine("cuda", workspace["model"], meta,
                               Settings(gpu_batch_size=1024, gpu_num_bundles=3, complete_threads=2, **variant))
        engine.load(split)
        engine.warmup()
        whole = engine.predict_ranges(np.array([0]), np.array([len(split)]))  # 5 chunks through 3 bundles
        if variant == variants[0]:
            first = whole
        else:  # the same int8 bytes reach the kernels whatever the path: bit-identical
            np.testing.assert_array_equal(whole, first)
        np.testing.assert_allclose(whole, want.numpy(), atol=2e-2)
        assert float(np.abs(whole - want.numpy()).mean()) < 1e-3
        starts, ends = np.array([4000, 17, 1, 2500]), np.array([4100, 40, 2, 2501])  # not contiguous
        rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        np.testing.assert_allclose(engine.predict_ranges(starts, ends), whole[rows], atol=1e-6)
        np.testing.assert_allclose(engine.predict(np.asarray(split.numeric)[:7], np.asarray(split.categorical)[:7]),
                                   whole[:7], atol=1e-6)
        engine.close()


@pytest.mark.parametrize("top_gemm", ["triton", SHIPPED_GEMM])
def test_multi_gpu_engine_matches_one_gpu(workspace, monkeypatch, top_gemm: str) -> None:
    """Every GPU gives the one-GPU predictions; with the CUTLASS library too (its own CUDA runtime must launch on
    each engine's device, not on device 0)."""
    from dlrm_bench.engines.cuda.kernel_library import library_path
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    if top_gemm != "triton" and not library_path().is_file():
        pytest.skip("needs the CUTLASS library (make kernels)")
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"]))
    meta = load_meta(workspace["data"])
    split = open_split(workspace["data"] / "test")
    results = []
    for gpus in (1, torch.cuda.device_count()):
        engine = create_engine("cuda", workspace["model"], meta, Settings(gpu_batch_size=512, gpus=gpus,
                                                                          top_gemm=top_gemm))
        assert engine.describe()["top_gemm"] == top_gemm
        engine.load(split)
        futures = [engine.predict_ranges_async(np.array([lo]), np.array([min(lo + 500, len(split))]))
                   for lo in range(0, len(split), 500)]
        results.append(np.concatenate([f.result() for f in futures]))
        engine.close()
    np.testing.assert_array_equal(results[0], results[1])


def test_loadgen_accuracy_run_on_cuda(workspace, monkeypatch) -> None:
    """Offline and Server, AccuracyOnly and PerformanceOnly, from the shipped config: the AUC holds. The fixture is
    not a quick-run dataset, so --min_query_count replaces the rules' 270,336 Server queries (135 s at 2,000/s)."""
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"]))
    logs = workspace["root"] / "logs"
    assert cli(["run", "--dataset-dir", str(workspace["data"]), "--model", str(workspace["model"]),
                "--engine", "cuda", "--scenarios", "Offline,Server", "--test_mode", "AccuracyOnly,PerformanceOnly",
                "--config_ver", "high_accuracy", "--min_duration", "2", "--server_target_qps", "2000",
                "--offline_expected_qps", "20000", "--min_query_count", "1000", "--log_dir", str(logs)]) in (0, 1)
    results = [json.loads(p.read_text()) for p in (logs / "latest").glob("*/dlrm/*/*/*/result.json")]
    assert len(results) == 4
    acc = [r for r in results if r["test_mode"] == "AccuracyOnly"]
    assert all(r["auc_ratio"] > 0.99 for r in acc), [r["auc_ratio"] for r in acc]


def test_cuda_graph_replays_match_kernel_launches(workspace, monkeypatch) -> None:
    """cuda_graphs: every batch replays its bundle's graph of the smallest size bucket that holds it (the row
    expansion recorded inside); the predictions are those of launching the kernels one by one, for scattered
    samples over several chunks, a contiguous span, a single pair and a batch of exactly one bucket, with the
    a new split drops the graphs (they hold its addresses)."""
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"]))
    meta = load_meta(workspace["data"])
    split = open_split(workspace["data"] / "test")
    rng = np.random.default_rng(3)
    starts = np.sort(rng.choice(len(split) - 8, 600, replace=False))
    ends = starts + rng.integers(1, 8, starts.size)
    ends = np.minimum(ends, np.append(starts[1:], len(split)))  # non-overlapping, non-contiguous samples
    requests = [(starts, ends), (np.array([10]), np.array([1034])), (np.array([4999]), np.array([5000])),
                (np.array([300, 7]), np.array([500, 63]))]  # 1,024 pairs, 1 pair, 256 pairs (one bucket)
    results = {}
    for graphs in (False, True):
        engine = create_engine("cuda", workspace["model"], meta,
                               Settings(gpu_batch_size=1024, gpu_num_bundles=2, cuda_graphs=graphs,
                                        cuda_graph_buckets=4))
        engine.load(split)
        engine.warmup()
        results[graphs] = [engine.predict_ranges(s, e) for s, e in requests]
        if graphs:
            assert engine.describe()["cuda_graph_sizes"] == [256, 512, 768, 1024]
            assert engine.graph_batches == sum(len(chunk_ranges(s, e, 1024)) for s, e in requests)
            engine.load(split)  # a new binding: graphs dropped, recorded again by warmup
            assert not engine.graphs_ready
            engine.warmup()
            for (s, e), want in zip(requests, results[graphs]):
                np.testing.assert_array_equal(engine.predict_ranges(s, e), want)
        engine.close()
    for got, want in zip(results[True], results[False]):
        np.testing.assert_array_equal(got, want)


def test_cutlass_hidden_layers_in_the_engine(workspace, monkeypatch) -> None:
    """top_gemm: the hidden top layers on the CUTLASS library, with and without CUDA graphs (buckets of several
    sizes, so the kernels are captured at several row counts): the emulation's predictions, as the Triton path.
    The "_permuted" variant too, whose stored column order the Triton final layer follows."""
    from dlrm_bench.engines.cuda.kernel_library import library_path
    if not library_path().is_file() or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs the CUTLASS library (make kernels) and a Hopper GPU")
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"]))
    meta = load_meta(workspace["data"])
    split = open_split(workspace["data"] / "test")
    results = {}
    permuted = "128x128_c1x2_pingpong_fma_permuted"  # stores its columns in an order of its own
    for top_gemm, graphs in (("triton", False), (SHIPPED_GEMM, False), (SHIPPED_GEMM, True), (permuted, True)):
        engine = create_engine("cuda", workspace["model"], meta,
                               Settings(gpu_batch_size=1024, gpu_num_bundles=2, cuda_graphs=graphs,
                                        cuda_graph_buckets=4, top_gemm=top_gemm))
        assert engine.describe()["top_gemm"] == top_gemm
        engine.load(split)
        engine.warmup()
        results[top_gemm, graphs] = engine.predict_ranges(np.array([0, 4990]), np.array([3001, 5000]))
        engine.close()
    # both paths use the folded epilogue: the same int8 activations, so the same probabilities
    np.testing.assert_array_equal(results[SHIPPED_GEMM, False], results["triton", False])
    np.testing.assert_array_equal(results[SHIPPED_GEMM, True], results["triton", False])
    np.testing.assert_array_equal(results[permuted, True], results["triton", False])
    engine = create_engine("cuda", workspace["model"], meta, Settings(gpu_batch_size=1024, cuda_graphs=True,
                                                                      cuda_graph_buckets=4, cutlass_final_layer=True,
                                                                      top_gemm=SHIPPED_GEMM))
    assert engine.describe()["cutlass_final_layer"]
    engine.load(split)
    engine.warmup()
    final = engine.predict_ranges(np.array([0, 4990]), np.array([3001, 5000]))
    engine.close()
    np.testing.assert_allclose(final, results["triton", False], atol=1e-5, rtol=0)  # another sum order


def test_a_missing_cutlass_library_falls_back_to_triton(workspace, monkeypatch, capsys) -> None:
    import dlrm_bench.engines.cuda.kernel_library as kernel_library

    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"]))
    monkeypatch.setenv(kernel_library.LIBRARY_ENV, str(workspace["root"] / "no-such-lib.so"))
    monkeypatch.setattr(kernel_library, "_LOADED", None)
    meta = load_meta(workspace["data"])
    engine = create_engine("cuda", workspace["model"], meta, Settings(gpu_batch_size=512, top_gemm=SHIPPED_GEMM,
                                                                      interaction_kernel="cuda", bottom_kernel="cuda"))
    assert engine.describe()["top_gemm"] == "triton"
    assert engine.describe()["interaction_kernel"] == "triton"
    assert engine.describe()["bottom_kernel"] == "triton"
    engine.close()
    err = capsys.readouterr().err
    assert f"top_gemm {SHIPPED_GEMM}" in err and "the top layers run in Triton" in err
    assert "interaction_kernel cuda" in err and "the interaction runs in Triton" in err
    assert "bottom_kernel cuda" in err and "the bottom MLP runs in Triton" in err


def test_cuda_front_kernels_in_the_engine(workspace, monkeypatch) -> None:
    """interaction_kernel cuda, bottom_kernel cuda, and the H100 configs' whole set of native kernels: the same
    probabilities as the Triton kernels, launched one by one and in CUDA graphs."""
    from dlrm_bench.engines.cuda.kernel_library import library_path
    if not library_path().is_file() or torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("needs the native kernel library (make kernels) and a Hopper GPU")
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"]))
    meta = load_meta(workspace["data"])
    split = open_split(workspace["data"] / "test")
    starts, ends = np.array([0, 4990, 3100]), np.array([3001, 5000, 3400])
    results = {}
    both = {"interaction_kernel": "cuda", "bottom_kernel": "cuda"}
    shipped = {**both, "top_gemm": SHIPPED_GEMM, "top_gemm_first_layer": "128x128_c1x2_pingpong_fma_permuted",
               "interaction_pairs_per_warp": 16}
    for name, extra in (("triton", {}), ("cuda interaction", {"interaction_kernel": "cuda"}),
                        ("cuda bottom", {"bottom_kernel": "cuda"}),
                        ("cuda+graphs", {**both, "cuda_graphs": True, "cuda_graph_buckets": 4}),
                        ("shipped", {**shipped, "cuda_graphs": True, "cuda_graph_buckets": 4})):
        engine = create_engine("cuda", workspace["model"], meta, Settings(gpu_batch_size=1024, **extra))
        assert engine.describe()["interaction_kernel"] == extra.get("interaction_kernel", "triton")
        assert engine.describe()["bottom_kernel"] == extra.get("bottom_kernel", "triton")
        engine.load(split)
        engine.warmup()
        results[name] = engine.predict_ranges(starts, ends)
        engine.close()
    for name in results:
        np.testing.assert_array_equal(results[name], results["triton"])


def test_a_first_layer_kernel_without_a_cutlass_top_gemm_is_named(workspace, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"]))
    engine = create_engine("cuda", workspace["model"], load_meta(workspace["data"]),
                           Settings(gpu_batch_size=512, top_gemm_first_layer="128x128_c1x2_pingpong_fma_permuted"))
    assert engine.describe()["top_gemm"] == "triton" and engine.describe()["top_gemm_first_layer"] == "triton"
    engine.close()
    assert "top_gemm_first_layer 128x128_c1x2_pingpong_fma_permuted needs a CUTLASS top_gemm" in capsys.readouterr().err
