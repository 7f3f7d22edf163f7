"""The auditor's "new weights" and "new data" workflows, through the CLI, with the staleness rules of
quant/artifacts.py and quant/calibration.py: a derived file made from another model or from an earlier version of
the dataset is rebuilt or refused by name, never used silently."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from dlrm_bench.cli import main as cli
from dlrm_bench.criteo.dataset import load_meta
from dlrm_bench.errors import UserError
from dlrm_bench.quant import artifacts, calibration, tables
from tests.conftest import TINY_CARDINALITIES, save_random_model, write_preprocessed_dataset


def expected_tables(model: Path, tmp: Path) -> bytes:
    """The int8 tables file that model's weights give, written independently of the derived folder."""
    from dlrm_bench.model.checkpoint import load_checkpoint

    out = tmp / "expected.bin"
    tables.split_checkpoint_tables(load_checkpoint(model).state_dict, out, progress=False)
    return out.read_bytes()


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path / "scratch"))
    return tmp_path


def test_new_weights_rebuild_split_files_and_refuse_the_old_cache(scratch, capsys):
    data = write_preprocessed_dataset(scratch / "data", num_days=1, rows_per_day=200, test_rows=300)
    model = save_random_model(scratch / "models" / "mine.pt", TINY_CARDINALITIES, seed=1)
    flags = ["--dataset-dir", str(data), "--model", str(model)]
    folder = artifacts.derived_dir(model)
    assert cli(["calibrate", *flags]) == 0  # first use: split files + cache
    first_key = json.loads((folder / "source.json").read_text())["model_key"]
    cache = folder / calibration.CACHE_FILE
    assert json.loads(cache.read_text())["model_key"] == first_key

    save_random_model(model, TINY_CARDINALITIES, seed=2)  # new weights under the same name
    capsys.readouterr()
    assert cli(["generate-engines", *flags]) == 0
    assert "rebuilding (the checkpoint changed)" in capsys.readouterr().out
    new_key = json.loads((folder / "source.json").read_text())["model_key"]
    assert new_key != first_key and new_key == artifacts.model_key(model)
    assert (folder / tables.TABLES_FILE).read_bytes() == expected_tables(model, scratch)

    meta = load_meta(data)
    with pytest.raises(UserError, match=rf"calibration cache {cache} is stale: it was made for another model"):
        artifacts.load_int8_model(model, meta)
    assert cli(["calibrate", *flags]) == 0
    assert json.loads(cache.read_text())["model_key"] == new_key
    assert artifacts.load_int8_model(model, meta).directory == folder


def test_new_weights_with_the_derived_folder_removed(scratch):
    data = write_preprocessed_dataset(scratch / "data", num_days=1, rows_per_day=200, test_rows=300)
    model = save_random_model(scratch / "m.pt", TINY_CARDINALITIES, seed=1)
    flags = ["--dataset-dir", str(data), "--model", str(model)]
    assert cli(["calibrate", *flags]) == 0
    save_random_model(model, TINY_CARDINALITIES, seed=3)
    shutil.rmtree(artifacts.derived_dir(model))
    assert cli(["calibrate", *flags]) == 0  # regenerates the split files, then calibrates
    folder = artifacts.derived_dir(model)
    assert (folder / tables.TABLES_FILE).read_bytes() == expected_tables(model, scratch)
    assert json.loads((folder / calibration.CACHE_FILE).read_text())["model_key"] == artifacts.model_key(model)


def test_engine_start_rebuilds_the_split_but_not_the_calibration(scratch):
    """The int8 engines' loader: a replaced checkpoint gets new split files on the spot, but the old cache is an
    error naming it (never recomputed behind the user's back, never used)."""
    data = write_preprocessed_dataset(scratch / "data", num_days=1, rows_per_day=200, test_rows=300)
    model = save_random_model(scratch / "m.pt", TINY_CARDINALITIES, seed=1)
    meta = load_meta(data)
    artifacts.load_int8_model(model, meta)  # computes the missing cache once
    save_random_model(model, TINY_CARDINALITIES, seed=4)
    with pytest.raises(UserError, match="stale"):
        artifacts.load_int8_model(model, meta)
    assert (artifacts.derived_dir(model) / tables.TABLES_FILE).read_bytes() == expected_tables(model, scratch)


def test_new_data_same_tables_refuses_the_cache_until_recalibrated(scratch, capsys):
    """A dataset preprocessed again with other content (same name, same table sizes): the calibration cache of
    the earlier version is refused by name; `calibrate` fixes it. Another dataset's cache is used with a note."""
    data = write_preprocessed_dataset(scratch / "data", num_days=1, rows_per_day=200, test_rows=300, seed=0)
    model = save_random_model(scratch / "m.pt", TINY_CARDINALITIES, seed=1)
    flags = ["--dataset-dir", str(data), "--model", str(model)]
    assert cli(["calibrate", *flags]) == 0
    cache = artifacts.derived_dir(model) / calibration.CACHE_FILE
    old = json.loads(cache.read_text())

    shutil.rmtree(data)
    write_preprocessed_dataset(data, num_days=1, rows_per_day=200, test_rows=300, seed=5)  # new data
    meta = load_meta(data)
    assert meta.fingerprint != old["dataset_fingerprint"] and meta.name == old["dataset_name"]
    with pytest.raises(UserError, match=rf"{cache} is stale: it was made from an earlier version of dataset"):
        artifacts.load_int8_model(model, meta)
    assert cli(["calibrate", *flags]) == 0
    assert json.loads(cache.read_text())["dataset_fingerprint"] == meta.fingerprint
    artifacts.load_int8_model(model, meta)

    other = write_preprocessed_dataset(scratch / "other", num_days=1, rows_per_day=200, test_rows=300, seed=6,
                                       name="another")
    capsys.readouterr()
    artifacts.load_int8_model(model, load_meta(other))
    assert "was made on dataset 'fixture'; using it for 'another'" in capsys.readouterr().out


def _shuffle_lines(path: Path, seed: int) -> None:
    lines = path.read_text().splitlines(keepends=True)
    random.Random(seed).shuffle(lines)
    path.write_text("".join(lines))


def test_new_raw_days_preprocess_recalibrate_run(scratch, capsys):
    """The README's new-data steps on real preprocessing: new raw files -> preprocess (a finished dataset keeps no
    work state, so every day is parsed again) -> the old cache is refused -> calibrate -> run."""
    raw = scratch / "raw"
    assert cli(["generate-data", "--scale", "tiny", "--output", str(raw), "--days", "2", "--rows-per-day",
                "1500"]) == 0
    out = scratch / "pre"
    pre = ["preprocess", "--raw-dir", str(raw), "--output", str(out), "--name", "audit", "--max-ind-range",
           "100000", "--workers", "1"]
    assert cli(pre) == 0
    meta = load_meta(out)
    model = save_random_model(scratch / "m.pt", meta.cardinalities, seed=7)
    flags = ["--dataset-dir", str(out), "--model", str(model)]
    assert cli(["calibrate", *flags]) == 0
    old_calibration = np.load(out / "calibration" / "numeric_fp32.npy")

    _shuffle_lines(raw / "day_1", seed=1)  # a new last day: other test and calibration rows, same values
    assert cli(pre) == 0
    new = load_meta(out)
    assert new.fingerprint != meta.fingerprint and new.cardinalities == meta.cardinalities
    assert not np.array_equal(np.load(out / "calibration" / "numeric_fp32.npy"), old_calibration)
    with pytest.raises(UserError, match="stale: it was made from an earlier version of dataset 'audit'"):
        artifacts.load_int8_model(model, new)
    assert cli(["calibrate", *flags]) == 0
    artifacts.load_int8_model(model, new)
    assert cli(["run", *flags, "--engine", "reference", "--test_mode", "AccuracyOnly",
                "--log_dir", str(scratch / "logs")]) == 0
    result = json.loads(next((scratch / "logs" / "latest").rglob("result.json")).read_text())
    assert result["dataset_dir"] == str(out) and result["accuracy_passed"] is True
