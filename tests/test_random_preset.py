"""The criteo-tb-random preset on tiny tables: npy layout, skewed access, frequencies, int8 model files."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrm_bench import random_preset
from dlrm_bench.criteo import partition
from dlrm_bench.criteo.dataset import load_meta, open_npy, open_partition, open_split
from dlrm_bench.criteo.frequencies import read_row_frequencies
from dlrm_bench.criteo.preprocess import quantize_numeric_int8
from dlrm_bench.errors import UserError
from dlrm_bench.model.checkpoint import load_checkpoint
from dlrm_bench.model.dlrm import reference_shapes
from dlrm_bench.quant.tables import MLP_FILE, TABLES_FILE, read_tables

CARDS = [1000, 50, 30, 20, 10, 3, 7, 5, 4, 2000, 300, 200, 10, 22, 11, 15, 4, 9, 14, 5000, 700, 900, 58, 12, 8, 36]
PAIRS = 4_000
SPLIT_FILES = ("ground_truth.npy", "numeric_fp32.npy", "numeric_fp16.npy", "numeric_int8_linear.npy",
               "numeric_int8_chw4.npy", "categorical_int32.npy")


QUANTILES = [100, 100, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 300, 300, 400, 500, 600, 700]


def quantile_file(directory: Path) -> Path:
    """The reference's dist_quantile.txt values, written here so the tests need no shared/ folder."""
    path = directory / "dist_quantile.txt"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(", ".join(map(str, QUANTILES)) + "\n")
    return path


def make_dataset(out: Path, seed: int = 1, device: str = "cpu") -> Path:
    return random_preset.generate_dataset(out, PAIRS, CARDS, seed=seed, device=device, calibration_rows=700,
                                          chunk_rows=1_500, quantile_file=quantile_file(out.parent),
                                          progress=False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("random_data"))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_preset.generate_model(tmp_path_factory.mktemp("random_model"), CARDS, seed=1, device="cpu",
                                        chunk_rows=700, progress=False)


def test_dataset_opens_with_the_project_reader(dataset: Path) -> None:
    meta = load_meta(dataset)
    assert meta.name == "criteo-tb-random" and meta.cardinalities == tuple(CARDS)
    assert meta.test_rows == PAIRS and meta.calibration_rows == 700
    test = open_split(dataset / "test")
    assert len(test) == PAIRS and len(open_split(dataset / "calibration")) == 700
    offsets = open_partition(dataset / "test", PAIRS)
    np.testing.assert_array_equal(offsets, partition.partition_offsets(
        partition.aggregation_sizes(PAIRS, np.array(QUANTILES))))


def test_split_arrays_agree_with_each_other(dataset: Path) -> None:
    test = dataset / "test"
    numeric = open_npy(test / "numeric_fp32.npy", np.dtype(np.float32), 13, PAIRS)
    fp16 = open_npy(test / "numeric_fp16.npy", np.dtype(np.float16), 13, PAIRS)
    int8 = open_npy(test / "numeric_int8_linear.npy", np.dtype(np.int8), 13, PAIRS)
    chw4 = open_npy(test / "numeric_int8_chw4.npy", np.dtype(np.int8), 16, PAIRS)
    labels = open_npy(test / "ground_truth.npy", np.dtype(np.float32), None, PAIRS)
    np.testing.assert_array_equal(fp16, numeric.astype(np.float16))
    np.testing.assert_array_equal(int8, quantize_numeric_int8(np.asarray(numeric)))
    np.testing.assert_array_equal(chw4[:, :13], int8)
    assert not chw4[:, 13:].any()
    assert numeric.min() >= 0 and numeric.max() < 14.2313 and (numeric == 0).mean() > 0.1
    assert set(np.unique(labels)) <= {0.0, 1.0} and 0.015 < labels.mean() < 0.055


def test_ids_are_in_range_and_skewed_per_table(dataset: Path) -> None:
    ids = np.asarray(open_split(dataset / "test").categorical)
    assert ids.dtype == np.int32 and ids.min() >= 0
    assert np.all(ids.max(axis=0) < np.array(CARDS))
    counts = np.bincount(ids[:, 19], minlength=5000)  # the 5,000-row table
    top = np.sort(counts)[::-1]
    assert top[:50].sum() > 0.45 * PAIRS  # top 1% of rows: ~57% of lookups at a = 1.1
    hottest = set(np.argsort(counts)[::-1][:10].tolist())
    assert hottest != set(range(10))  # hot rows are scattered over the table, not the first ids


def test_access_law_probabilities_match_sampling() -> None:
    law = random_preset.access_laws([10, 1000], 1.2, seed=3)[0]
    ranks = torch.arange(10)
    p = law.probability(ranks)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert torch.all(p[:-1] > p[1:])
    rows = law.sample(torch.rand(400_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    observed = torch.bincount(rows, minlength=10).double() / rows.numel()
    np.testing.assert_allclose(observed.numpy(), p[torch.argsort(law.rank_to_row(ranks))].numpy(), atol=3e-3)
    assert sorted(law.rank_to_row(ranks).tolist()) == list(range(10))  # a bijection


def test_row_frequencies_follow_the_access_law(dataset: Path) -> None:
    freq = read_row_frequencies(dataset / random_preset.FREQUENCIES_FILE)
    assert [f.shape[0] for f in freq] == CARDS
    for f in freq:
        assert f.dtype == np.float32 and f.min() > 0
        assert float(f.sum(dtype=np.float64)) == pytest.approx(random_preset.TRAINING_PAIRS, rel=1e-5)
    ids = np.asarray(open_split(dataset / "test").categorical)
    for t in (0, 9, 19):
        observed = np.bincount(ids[:, t], minlength=CARDS[t])
        assert np.argmax(observed) == np.argmax(freq[t])
        hot = np.argsort(freq[t])[::-1][: CARDS[t] // 20]  # the 5% hottest rows by the file
        assert observed[hot].sum() > 0.4 * PAIRS


def test_same_seed_same_bytes_other_seed_differs(dataset: Path, tmp_path: Path) -> None:
    again = make_dataset(tmp_path / "again")
    for name in SPLIT_FILES:
        assert (again / "test" / name).read_bytes() == (dataset / "test" / name).read_bytes()
        assert (again / "calibration" / name).read_bytes() == (dataset / "calibration" / name).read_bytes()
    assert (again / "row_frequencies.bin").read_bytes() == (dataset / "row_frequencies.bin").read_bytes()
    assert load_meta(again).fingerprint == load_meta(dataset).fingerprint
    other = make_dataset(tmp_path / "other", seed=2)
    assert (other / "test" / "categorical_int32.npy").read_bytes() != \
        (dataset / "test" / "categorical_int32.npy").read_bytes()
    assert load_meta(other).fingerprint != load_meta(dataset).fingerprint


def test_complete_dataset_is_kept_and_incomplete_one_rebuilt(tmp_path: Path) -> None:
    out = make_dataset(tmp_path / "d")
    before = (out / "test" / "categorical_int32.npy").stat().st_mtime_ns
    make_dataset(out)
    assert (out / "test" / "categorical_int32.npy").stat().st_mtime_ns == before
    (out / "test" / "numeric_fp16.npy").unlink()
    make_dataset(out)
    assert (out / "test" / "numeric_fp16.npy").exists()
    assert not list(out.rglob(".*.tmp"))


def test_int8_tables_file(model: Path) -> None:
    scales, rows = read_tables(model / TABLES_FILE, CARDS)
    np.testing.assert_allclose(scales, [math.sqrt(1 / r) / 127.5 for r in CARDS], rtol=1e-6)
    assert rows.shape == (sum(CARDS), 128) and rows.dtype == np.int8
    values = np.asarray(rows)
    assert values.min() == -127 and values.max() == 127
    assert abs(float(values.mean())) < 0.5 and float(values.std()) == pytest.approx(255 / math.sqrt(12), rel=0.02)
    offset = 4 + 4 * len(CARDS)
    assert (model / TABLES_FILE).stat().st_size == offset + sum(CARDS) * 128


def test_model_is_deterministic_and_chunks_are_int8(model: Path, tmp_path: Path) -> None:
    again = random_preset.generate_model(tmp_path / "m", CARDS, seed=1, device="cpu", chunk_rows=700,
                                         progress=False)
    assert (again / TABLES_FILE).read_bytes() == (model / TABLES_FILE).read_bytes()
    other = random_preset.generate_model(tmp_path / "o", CARDS, seed=2, device="cpu", chunk_rows=700,
                                         progress=False)
    assert (other / TABLES_FILE).read_bytes() != (model / TABLES_FILE).read_bytes()
    chunks = list(random_preset.random_table_chunks([1500, 3], seed=0, device=torch.device("cpu"), chunk_rows=700))
    assert [c.shape for c in chunks] == [(700, 128), (700, 128), (100, 128), (3, 128)]
    assert all(c.dtype == np.int8 for c in chunks)


def test_mlp_checkpoint_has_reference_keys_shapes_and_init(model: Path) -> None:
    state = load_checkpoint(model / MLP_FILE).state_dict
    expected = {k: v for k, v in reference_shapes([]).items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert all(v.dtype == torch.float32 for v in state.values())
    w = state["top_l.2.weight"]
    assert float(w.std()) == pytest.approx(math.sqrt(2 / 2048), rel=0.02)
    assert float(state["top_l.0.bias"].std()) == pytest.approx(math.sqrt(1 / 1024), rel=0.1)
    assert float(state["bot_l.0.weight"].std()) == pytest.approx(math.sqrt(2 / (13 + 512)), rel=0.05)


def test_int8_model_loader_reads_the_preset(dataset: Path, model: Path) -> None:
    from dlrm_bench.quant.artifacts import load_int8_model

    loaded = load_int8_model(model, load_meta(dataset))  # calibrates on the preset's calibration split
    assert loaded.tables.shape == (sum(CARDS), 128)
    assert (model / "calibration_cache.json").exists()


def test_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="26 table sizes"):
        random_preset.generate_dataset(tmp_path, 10, [5] * 25, progress=False)
    with pytest.raises(UserError, match="exponent"):
        random_preset.generate_dataset(tmp_path, 10, CARDS, exponents=0.9, progress=False)
    with pytest.raises(UserError, match="num_pairs"):
        random_preset.generate_dataset(tmp_path, 0, CARDS, progress=False)


def test_main_writes_data_and_model(tmp_path: Path) -> None:
    args = argparse.Namespace(what="all", output=tmp_path / "data", model_output=tmp_path / "model", num_pairs=600,
                              seed=4, device="cpu", quantile_file=quantile_file(tmp_path), force=False,
                              cardinalities=",".join(map(str, CARDS)), calibration_rows=100)
    assert random_preset.main(args) == 0
    assert load_meta(tmp_path / "data").test_rows == 600
    assert read_tables(tmp_path / "model" / TABLES_FILE, CARDS)[1].shape[0] == sum(CARDS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generation_is_valid_and_deterministic(tmp_path: Path) -> None:
    a = make_dataset(tmp_path / "a", device="cuda")
    b = make_dataset(tmp_path / "b", device="cuda")
    assert load_meta(a).raw["preset"]["device_kind"] == "cuda"
    for name in SPLIT_FILES:
        assert (a / "test" / name).read_bytes() == (b / "test" / name).read_bytes()
    ids = np.asarray(open_split(a / "test").categorical)
    assert np.all(ids.max(axis=0) < np.array(CARDS)) and ids.min() >= 0
    counts = np.bincount(ids[:, 19], minlength=5000)
    assert np.sort(counts)[::-1][:50].sum() > 0.45 * PAIRS
    m = random_preset.generate_model(tmp_path / "m", CARDS, seed=1, device="cuda", chunk_rows=700, progress=False)
    scales, rows = read_tables(m / TABLES_FILE, CARDS)
    assert np.asarray(rows).min() == -127 and np.asarray(rows).max() == 127
