"""The CPU engine's table store (engines/cpu/table_store.py): tables read through the memory map, a hot part in
RAM with the cold rest from the map, or every row in RAM give bit-identical predictions; the hot set is the CUDA
store's ranking; the map is not copied; bad settings are refused."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrm_bench.criteo.frequencies import hottest_rows, write_row_frequencies
from dlrm_bench.engines.cpu import native, table_store
from dlrm_bench.engines.cpu.engine import CpuEngine
from dlrm_bench.engines.cpu.mlp import onednn_available
from dlrm_bench.engines.cpu.table_store import build_store, copy_rows
from dlrm_bench.engines.cuda.table_store import hot_row_mask
from dlrm_bench.errors import UserError
from dlrm_bench.quant.artifacts import Int8Model
from dlrm_bench.quant.tables import TABLES_FILE, advise_random, read_tables, write_tables
from dlrm_bench.settings import Settings
from tests.quant_fixtures import random_inputs, random_quantized

CARDS = [3000, 7, 130, 3, 400, 2, 9, 31, 5, 2500, 17, 11, 4, 8, 21, 6, 3, 12, 4, 1800, 33, 45, 10, 16, 6, 5]
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="torch build without oneDNN int8 ops")


@pytest.fixture(scope="module")
def mapped(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random quantized model whose tables are a .bin file read back as a memory map, skewed row frequencies
    (with ties) beside it, and 2001 random pairs."""
    root = tmp_path_factory.mktemp("cpu_store")
    _, qm, tables, offsets = random_quantized(7, CARDS)
    write_tables(root / TABLES_FILE, qm.table_scales.tolist(), iter([tables.numpy()]), tables.shape[0],
                 progress=False)
    scales, rows = read_tables(root / TABLES_FILE, CARDS)
    rng = np.random.default_rng(0)
    freqs = [np.minimum(rng.zipf(1.3, c), 1000).astype(np.float32) for c in CARDS]
    write_row_frequencies(root / "row_frequencies.bin", freqs)
    numeric, categorical = random_inputs(5, 2001, CARDS)
    return {"root": root, "qm": qm, "scales": scales, "rows": rows, "offsets": offsets.numpy(), "freqs": freqs,
            "numeric": numeric.numpy(), "categorical": categorical.numpy()}


def engine(m: dict, tables: np.ndarray, settings: dict) -> CpuEngine:
    model = Int8Model(m["root"], m["scales"], tables, m["offsets"], m["qm"])
    return CpuEngine(model, Settings(batch_size=700, threads=2).with_values(settings, "test"),
                     frequencies_file=m["root"] / "row_frequencies.bin")


@pytest.mark.parametrize("part", [0.001, 0.1, 0.37, 0.999, 1.0])
def test_hottest_rows_against_a_full_stable_sort(mapped, part: float) -> None:
    """The partition-based ranking (shared by the CPU and CUDA stores) against the plain definition: each table's
    counts over its total, highest first, ties to the lower global row id."""
    scores = np.concatenate([np.asarray(c, np.float32) / np.float32(np.sum(c, dtype=np.float64))
                             for c in mapped["freqs"]])
    keep = int(np.ceil(part * scores.size))
    want = np.sort(np.argsort(-scores, kind="stable")[:keep])
    np.testing.assert_array_equal(hottest_rows(mapped["freqs"], part), want)
    mask = hot_row_mask(mapped["freqs"], part, torch.device("cpu")).numpy()
    np.testing.assert_array_equal(np.flatnonzero(mask), want)


def test_chunked_copies_read_the_file(mapped, monkeypatch) -> None:
    monkeypatch.setattr(table_store, "CHUNK_ROWS", 1000)  # 8 chunks, the last one short
    rows = mapped["rows"]
    whole = np.asarray(rows)
    ids = np.sort(np.random.default_rng(1).choice(rows.shape[0], 900, replace=False))
    np.testing.assert_array_equal(copy_rows(rows, ids), whole[ids])
    np.testing.assert_array_equal(copy_rows(rows), whole)
    np.testing.assert_array_equal(copy_rows(whole, ids), whole[ids])


def test_default_store_is_the_read_only_map(mapped) -> None:
    store = build_store(mapped["rows"], 0.0)
    assert store.kind == "memory map" and store.remap is None and store.ram_part == 0.0
    assert store.tables is mapped["rows"] and isinstance(store.tables._mmap, mmap.mmap)  # no copy
    assert advise_random(store.tables)  # a map that madvise accepts
    assert not store.tables.flags.writeable
    assert store.ram_lookup_fraction(mapped["categorical"], mapped["offsets"]) == 0.0


def test_hot_store_layout(mapped) -> None:
    store = build_store(mapped["rows"], 0.2, mapped["root"] / "row_frequencies.bin", CARDS)
    ids = hottest_rows(mapped["freqs"], 0.2)
    assert store.kind == "hot/cold" and store.hot.shape == (ids.size, 128)
    assert store.ram_part == pytest.approx(0.2, abs=1e-3)
    np.testing.assert_array_equal(store.remap[ids], np.arange(ids.size))
    assert np.count_nonzero(store.remap >= 0) == ids.size
    np.testing.assert_array_equal(store.hot, np.asarray(mapped["rows"])[ids])
    fraction = store.ram_lookup_fraction(mapped["categorical"], mapped["offsets"])
    assert 0.2 < fraction < 1.0  # the small tables are all hot (their rows have the largest normalised counts)
    everything = np.arange(mapped["rows"].shape[0])
    np.testing.assert_array_equal(store.gather(everything), np.asarray(mapped["rows"]))


@needs_onednn
@pytest.mark.skipif(native.load_kernel() is None, reason="no C compiler for the native kernel")
def test_predictions_are_bit_identical_for_every_store(mapped) -> None:
    numeric, categorical = mapped["numeric"], mapped["categorical"]
    in_ram = np.array(mapped["rows"])
    want = engine(mapped, in_ram, {}).predict(numeric, categorical)
    cases = [(mapped["rows"], {}), (mapped["rows"], {"embedding_weights_in_ram_part": 0.05}),
             (mapped["rows"], {"embedding_weights_in_ram_part": 0.5}),
             (mapped["rows"], {"embedding_weights_in_ram_part": 0.5, "cpu_interaction": "torch"}),
             (mapped["rows"], {"embedding_weights_in_ram_part": 1.0})]
    kinds = []
    for tables, settings in cases:
        e = engine(mapped, tables, settings)
        np.testing.assert_array_equal(e.predict(numeric, categorical), want)
        kinds.append(e.describe()["tables"])
        e.close()
    assert kinds == ["memory map", "hot/cold", "hot/cold", "hot/cold", "ram"]


def test_bad_settings_are_refused(mapped, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"embedding_weights_in_ram_part must be in \[0, 1\]"):
        build_store(mapped["rows"], 1.5)
    with pytest.raises(UserError, match="needs row_frequencies.bin"):
        build_store(mapped["rows"], 0.3, tmp_path / "row_frequencies.bin")
    write_row_frequencies(tmp_path / "row_frequencies.bin", mapped["freqs"][:-1] + [np.ones(6, np.float32)])
    with pytest.raises(UserError, match="do not match"):
        build_store(mapped["rows"], 0.3, tmp_path / "row_frequencies.bin", CARDS)
