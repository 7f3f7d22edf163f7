"""The CPU engine (int8 recipe, oneDNN GEMMs, native gather + interaction): against the int8 emulation, against
the FP32 reference at edge batch sizes, its two interaction and two GEMM back ends against each other, chunking,
row indirection, bad ids, and a LoadGen accuracy run through the harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from dlrm_bench.cli import main as cli
from dlrm_bench.criteo.dataset import load_meta, open_split
from dlrm_bench.engines import create_engine
from dlrm_bench.engines.cpu import native
from dlrm_bench.engines.cpu.engine import CpuEngine
from dlrm_bench.engines.cpu.interaction import TOP_WIDTH, Interaction
from dlrm_bench.engines.cpu.mlp import BottomMLP, onednn_available
from dlrm_bench.engines.reference import ReferenceEngine
from dlrm_bench.errors import DataError
from dlrm_bench.model.dlrm import DLRM
from dlrm_bench.quant.artifacts import Int8Model
from dlrm_bench.quant.recipe import emulate_bottom, emulate_forward, quantize_numeric
from dlrm_bench.settings import Settings
from tests.conftest import TINY_CARDINALITIES, make_workspace
from tests.quant_fixtures import random_inputs, random_quantized

CARDS = list(TINY_CARDINALITIES)
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="torch build without oneDNN int8 ops")
needs_cc = pytest.mark.skipif(native.load_kernel() is None, reason="no C compiler for the native kernel")


@pytest.fixture(scope="module")
def random_model() -> dict:
    """fp32 state_dict, Int8Model (tables in memory), 3001 random pairs (numeric fp32, categorical int32) and the
    FP32 reference engine of the same model."""
    sd, qm, tables, offsets = random_quantized(3, CARDS)
    model = Int8Model(Path("."), qm.table_scales.numpy(), tables.numpy(), offsets.numpy(), qm)
    numeric, categorical = random_inputs(5, 3001, CARDS)
    reference = ReferenceEngine(DLRM.from_state_dict(sd), "cpu")
    return {"sd": sd, "model": model, "numeric": numeric.numpy(), "categorical": categorical.numpy(),
            "reference": reference}


def emulated(rm: dict, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
    m = rm["model"]
    return emulate_forward(m.quantized, torch.from_numpy(m.tables), torch.from_numpy(m.table_offsets),
                           quantize_numeric(rm["numeric"][rows]), torch.from_numpy(rm["categorical"][rows])).numpy()


@needs_onednn
def test_engine_matches_int8_emulation(random_model) -> None:
    engine = CpuEngine(random_model["model"], Settings(batch_size=1000, threads=2))  # 3 full batches + 1 pair
    got = engine.predict(random_model["numeric"], random_model["categorical"])
    want = emulated(random_model)
    diff = np.abs(got - want)
    assert diff.max() < 5e-3  # one requantization step somewhere, rarely
    assert np.mean(diff == 0) > 0.95
    assert got.dtype == np.float32 and got.shape == (3001,)
    engine.close()


@needs_onednn
def test_bottom_mlp_matches_emulation_up_to_one_step(random_model) -> None:
    qm = random_model["model"].quantized
    numeric_q = quantize_numeric(random_model["numeric"])
    got = BottomMLP(qm, "int8")(numeric_q).to(torch.int16)
    want = emulate_bottom(qm, numeric_q).to(torch.int16)
    assert got.dtype == torch.int16 and (got >= 0).all()
    assert int((got - want).abs().max()) <= 1
    assert float((got == want).float().mean()) > 0.99


@needs_cc
def test_native_interaction_equals_torch_path(random_model) -> None:
    m = random_model["model"]
    rows = np.diff(np.append(m.table_offsets, m.tables.shape[0]))
    native_path = Interaction(m.quantized, m.tables, m.table_offsets, rows, threads=2)
    torch_path = Interaction(m.quantized, m.tables, m.table_offsets, rows, threads=1, use_native=False)
    g = torch.Generator().manual_seed(0)
    dense = torch.randint(0, 128, (777, 128), dtype=torch.uint8, generator=g)
    cat = np.ascontiguousarray(random_model["categorical"][:777])
    a = torch.full((777, TOP_WIDTH), 255, dtype=torch.uint8)
    b = torch.full((777, TOP_WIDTH), 255, dtype=torch.uint8)
    native_path(dense, cat, a)
    torch_path(dense, cat, b)
    assert native_path.kind == "native" and torch_path.kind == "torch"
    assert torch.equal(a, b)
    assert int(a.max()) <= 127 and torch.equal(a[:, :128], dense)
    assert not bool(((a[:, 128:479] > 0) & (a[:, 479:830] > 0)).any())  # a dot is positive or negative
    native_path.close()


@needs_onednn
def test_gemm_backends_agree(random_model) -> None:
    """oneDNN int8 GEMMs and exact fp32 GEMMs on the same integers: equal up to rare one-step roundings."""
    args = (random_model["numeric"][:500], random_model["categorical"][:500])
    a = CpuEngine(random_model["model"], Settings(cpu_gemm="int8")).predict(*args)
    b = CpuEngine(random_model["model"], Settings(cpu_gemm="fp32")).predict(*args)
    np.testing.assert_allclose(a, b, atol=5e-3)


@needs_onednn
@pytest.mark.parametrize("batch", [1, 7, 999, 1024, 1025])
def test_close_to_fp32_reference_at_edge_batch_sizes(random_model, batch: int) -> None:
    """1 pair, an odd count, just under / exactly / just over the engine's internal batch (1024)."""
    reference = random_model["reference"]
    engine = CpuEngine(random_model["model"], Settings(batch_size=1024))
    numeric, categorical = random_model["numeric"][:batch], random_model["categorical"][:batch]
    want = reference.predict(numeric, categorical)
    got = engine.predict(numeric, categorical)
    assert got.shape == want.shape == (batch,)
    np.testing.assert_allclose(got, want, atol=0.03)
    assert np.abs(got - want).mean() < 0.01
    if batch > 100:  # the int8 model ranks pairs as the fp32 one does
        assert np.corrcoef(got, want)[0, 1] > 0.98


@needs_onednn
def test_bad_id_and_bad_shapes_raise(random_model) -> None:
    numeric, categorical = random_model["numeric"][:300], random_model["categorical"][:300].copy()
    categorical[217, 9] = CARDS[9]  # one past the end of table 9
    for interaction in ("native", "torch"):
        engine = CpuEngine(random_model["model"], Settings(cpu_interaction=interaction))
        with pytest.raises(DataError, match=f"C10 has id {CARDS[9]} but its table has {CARDS[9]} rows"):
            engine.predict(numeric, categorical)
    with pytest.raises(DataError, match="numeric must be"):
        engine.predict(numeric[:, :12], categorical)
    assert engine.predict(numeric[:0], categorical[:0]).shape == (0,)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_workspace(tmp_path_factory.mktemp("cpu"), test_rows=4000, rows_per_day=500, calibration_rows=1000,
                          max_sample=60, model_seed=1)


@needs_onednn
def test_ranges_through_the_factory(workspace, monkeypatch) -> None:
    """Split files + calibration built on first use; contiguous, scattered and raw-input paths agree."""
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"] / "scratch"))
    meta = load_meta(workspace["data"])
    split = open_split(workspace["data"] / "test")
    engine = create_engine("cpu", workspace["model"], meta, Settings(batch_size=1500, threads=0))
    engine.load(split)
    engine.warmup()
    whole = engine.predict_ranges(np.array([0]), np.array([len(split)]))
    starts, ends = np.array([3900, 17, 1, 2500]), np.array([4000, 40, 2, 2501])
    rows = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
    np.testing.assert_array_equal(engine.predict_ranges(starts, ends), whole[rows])
    raw = engine.predict(np.asarray(split.numeric)[:50], np.asarray(split.categorical)[:50])
    np.testing.assert_allclose(raw, whole[:50], atol=1e-6)
    facts = engine.describe()
    assert facts["engine"] == "cpu" and facts["threads"] >= 1 and facts["batch_size"] == 1500
    assert facts["tables"] == "memory map"
    engine.close()
    hot = create_engine("cpu", workspace["model"], meta, Settings(embedding_weights_in_ram_part=0.3))
    hot.load(split)  # the dataset's row_frequencies.bin picks the hot rows; the rest stay in the map
    assert hot.describe()["tables"] == "hot/cold"
    np.testing.assert_array_equal(hot.predict_ranges(np.array([0]), np.array([len(split)])), whole)
    hot.close()


@needs_onednn
def test_loadgen_accuracy_run_with_cpu_engine(workspace, monkeypatch) -> None:
    """`dlrm-bench run --engine cpu` in AccuracyOnly: the logged predictions give the AUC the result reports,
    and the ratio to the FP32 reference is that of the two engines called directly."""
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(workspace["root"] / "scratch"))
    logs = workspace["root"] / "logs"
    assert cli(["run", "--dataset-dir", str(workspace["data"]), "--model", str(workspace["model"]), "--engine", "cpu",
                "--scenarios", "Offline", "--test_mode", "AccuracyOnly", "--log_dir", str(logs)]) == 0
    result_path = next((logs / "latest").glob("*/dlrm/Offline/default/AccuracyOnly/result.json"))
    result = json.loads(result_path.read_text())
    assert result["engine"] == "cpu"
    split = open_split(workspace["data"] / "test")
    labels = np.asarray(split.labels)
    meta = load_meta(workspace["data"])
    ours = create_engine("cpu", workspace["model"], meta)
    ours.load(split)
    fp32 = create_engine("reference", workspace["model"], meta, Settings(device="cpu"))
    auc = roc_auc_score(labels, ours.predict_ranges(np.array([0]), np.array([len(split)])))
    auc_fp32 = roc_auc_score(labels, fp32.predict(np.asarray(split.numeric), np.asarray(split.categorical)))
    assert result["auc"] == pytest.approx(auc, abs=1e-9)
    assert result["auc_ratio"] == pytest.approx(auc / auc_fp32, abs=1e-9)
