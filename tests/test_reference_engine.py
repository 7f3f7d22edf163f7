"""The FP32 reference engine against an independent numpy computation of the DLRM formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dlrm_bench.criteo.dataset import load_meta, open_split
from dlrm_bench.engines import create_engine
from dlrm_bench.engines.reference import ReferenceEngine, build, predict_rows
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.model.checkpoint import save_checkpoint
from dlrm_bench.model.dlrm import DLRM
from dlrm_bench.settings import Settings


def random_state_dict(cardinalities, seed: int = 0) -> dict[str, torch.Tensor]:
    """A reference-layout state_dict with weights large enough that predictions spread over (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, sizes in (("bot_l", (13, 512, 256, 128)), ("top_l", (479, 1024, 1024, 512, 256, 1))):
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            sd[f"{prefix}.{2 * i}.weight"] = torch.randn(n_out, n_in, generator=g) * (1.5 / n_in ** 0.5)
            sd[f"{prefix}.{2 * i}.bias"] = torch.randn(n_out, generator=g) * 0.1
    for k, n in enumerate(cardinalities):
        sd[f"emb_l.{k}.weight"] = torch.randn(n, 128, generator=g) * 0.15
    return sd


def numpy_dlrm(sd: dict[str, torch.Tensor], numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    """The DLRM formula written out in float64 numpy, with explicit loops over the interaction pairs."""
    w = {k: v.numpy().astype(np.float64) for k, v in sd.items()}
    x = numeric.astype(np.float64)
    for i in (0, 2, 4):
        x = np.maximum(x @ w[f"bot_l.{i}.weight"].T + w[f"bot_l.{i}.bias"], 0.0)
    vectors = [x] + [w[f"emb_l.{k}.weight"][categorical[:, k]] for k in range(26)]
    dots = [np.sum(vectors[i] * vectors[j], axis=1) for i in range(1, 27) for j in range(i)]
    z = np.concatenate([x, np.stack(dots, axis=1)], axis=1)
    for n, i in enumerate((0, 2, 4, 6, 8)):
        z = z @ w[f"top_l.{i}.weight"].T + w[f"top_l.{i}.bias"]
        if n < 4:
            z = np.maximum(z, 0.0)
    return 1.0 / (1.0 + np.exp(-z[:, 0]))


@pytest.fixture(scope="module")
def model_and_meta(tiny_dataset: Path, tmp_path_factory) -> tuple[Path, object, dict]:
    meta = load_meta(tiny_dataset)
    sd = random_state_dict(meta.cardinalities)
    path = save_checkpoint(tmp_path_factory.mktemp("model") / "random.pt", sd)
    return path, meta, sd


@pytest.fixture(scope="module")
def engine(model_and_meta) -> ReferenceEngine:
    path, meta, _ = model_and_meta
    return build(path, meta, Settings(device="cpu"))


def test_matches_numpy_formula_to_1e5_relative(engine, model_and_meta, tiny_dataset: Path) -> None:
    _, _, sd = model_and_meta
    split = open_split(tiny_dataset / "test")
    numeric, categorical = np.asarray(split.numeric[:300]), np.asarray(split.categorical[:300])
    expected = numpy_dlrm(sd, numeric, categorical)
    got = engine.predict(numeric, categorical)
    assert got.dtype == np.float32 and got.shape == (300,)
    assert expected.std() > 0.05, "the test model should spread its predictions"
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("batch", [1, 37, 1000])
def test_batch_sizes_agree(model_and_meta, tiny_dataset: Path, batch: int) -> None:
    path, meta, _ = model_and_meta
    small_batches = build(path, meta, Settings(device="cpu", batch_size=64))  # 1000 rows -> 16 internal batches
    one_batch = build(path, meta, Settings(device="cpu", batch_size=4096))
    split = open_split(tiny_dataset / "test")
    numeric, categorical = np.asarray(split.numeric[:batch]), np.asarray(split.categorical[:batch])
    a = small_batches.predict(numeric, categorical)
    b = one_batch.predict(numeric, categorical)
    assert a.shape == (batch,)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_predict_ranges_contiguous_and_not(engine, tiny_dataset: Path) -> None:
    split = open_split(tiny_dataset / "test")
    engine.load(split)
    full = engine.predict(np.asarray(split.numeric), np.asarray(split.categorical))
    np.testing.assert_allclose(engine.predict_ranges(np.array([0, 10]), np.array([10, 25])), full[:25],
                               rtol=1e-5, atol=1e-7)
    starts, ends = np.array([500, 3, 900, 3]), np.array([520, 4, 1000, 9])  # gaps, reversed, repeats
    expected = np.concatenate([full[s:e] for s, e in zip(starts, ends)])
    np.testing.assert_allclose(engine.predict_ranges(starts, ends), expected, rtol=1e-5, atol=1e-7)
    future = engine.predict_ranges_async(starts, ends)
    np.testing.assert_allclose(future.result(), expected, rtol=1e-5, atol=1e-7)


def test_streamed_predictions_cover_the_split(model_and_meta, tiny_dataset: Path, engine) -> None:
    """predict_rows reads the split in chunks (a 3-row chunk here) and gives every pair's prediction in order."""
    path, meta, _ = model_and_meta
    split = open_split(tiny_dataset / "test")
    preds = predict_rows(build(path, meta, Settings(device="cpu")), split, 0, len(split), chunk=3)
    assert preds.shape == (len(split),) and preds.dtype == np.float32
    np.testing.assert_allclose(preds, engine.predict(np.asarray(split.numeric), np.asarray(split.categorical)),
                               rtol=1e-5, atol=1e-7)


def test_factory_builds_it(model_and_meta) -> None:
    path, meta, _ = model_and_meta
    engine = create_engine("reference", path, meta, Settings(device="cpu"))
    assert isinstance(engine, ReferenceEngine)
    facts = engine.describe()
    assert facts["engine"] == "reference" and facts["device"] == "cpu" and facts["precision"] == "fp32"


def test_mismatched_checkpoint_is_a_user_error(tmp_path: Path, model_and_meta) -> None:
    _, meta, sd = model_and_meta
    wrong = dict(sd, **{"emb_l.7.weight": torch.zeros(meta.cardinalities[7] + 1, 128)})
    path = save_checkpoint(tmp_path / "wrong.pt", wrong)
    with pytest.raises(UserError, match=r"emb_l\.7\.weight has shape"):
        build(path, meta)


def test_bad_inputs_are_data_errors(engine) -> None:
    numeric = np.zeros((4, 13), np.float32)
    categorical = np.zeros((4, 26), np.int32)
    categorical[2, 5] = engine.cardinalities[5]
    with pytest.raises(DataError, match="C6 has ids in"):
        engine.predict(numeric, categorical)
    with pytest.raises(DataError, match="numeric must be"):
        engine.predict(np.zeros((4, 12), np.float32), categorical)
    assert engine.predict(numeric[:0], categorical[:0]).shape == (0,)


def test_memory_mapped_tables_are_not_copied(model_and_meta) -> None:
    path, meta, _ = model_and_meta
    engine = build(path, meta, Settings(device="cpu"))
    from dlrm_bench.model.checkpoint import load_checkpoint

    assert isinstance(engine.model, DLRM)
    assert load_checkpoint(path).memory_mapped
    assert not engine.model.emb_l[0].weight.requires_grad


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_tables_on_host_and_device(model_and_meta, tiny_dataset: Path, engine) -> None:
    path, meta, sd = model_and_meta
    split = open_split(tiny_dataset / "test")
    numeric, categorical = np.asarray(split.numeric), np.asarray(split.categorical)
    expected = numpy_dlrm(sd, numeric, categorical)
    for budget in (None, 0.0, 1e-4):  # all tables on the GPU, none, some
        gpu = build(path, meta, Settings(device="cuda", batch_size=333, device_table_budget_gb=budget))
        if budget == 0.0:
            assert gpu.device_tables == set()
        np.testing.assert_allclose(gpu.predict(numeric, categorical), expected, rtol=1e-5, atol=0)
        gpu.close()
