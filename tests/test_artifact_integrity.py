"""Integrity of the int8 engine files and the calibration cache (quant/artifacts.py, quant/calibration.py): each is
recorded in manifest.json when built, checked at every start (size + sampled blocks, every byte with --verify),
refused by name when it fails, rebuilt by generate-engines, and built once when two processes start together."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dlrm_bench.cli import main as cli
from dlrm_bench.criteo.dataset import DatasetMeta, load_meta
from dlrm_bench.errors import DataError
from dlrm_bench.quant import artifacts, calibration, tables
from tests.conftest import TINY_CARDINALITIES, save_random_model, write_preprocessed_dataset

CARDS = (40_000, *TINY_CARDINALITIES[1:])
"""One table of 40,000 rows: a 5 MB .bin, larger than the 64 sampled blocks of 64 KiB."""
BUILDING = "building int8 engine files"


@pytest.fixture
def built(tmp_path: Path, monkeypatch) -> tuple[Path, DatasetMeta, Path, list[str]]:
    """(model, dataset meta, derived folder, CLI flags) after `calibrate`: split files, cache and manifest."""
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path / "scratch"))
    data = write_preprocessed_dataset(tmp_path / "data", cardinalities=CARDS, num_days=1, rows_per_day=200,
                                      test_rows=100, calibration_rows=100)
    model = save_random_model(tmp_path / "m.pt", CARDS, seed=1)
    flags = ["--dataset-dir", str(data), "--model", str(model)]
    assert cli(["calibrate", *flags]) == 0
    return model, load_meta(data), artifacts.derived_dir(model), flags


def flip_byte(path: Path, offset: int) -> None:
    """Same-size corruption: invert one byte."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))


def unsampled_offset(size: int) -> int:
    """A byte that no sampled block covers."""
    starts = artifacts.sample_offsets(size)
    gap = starts[1] + artifacts.BLOCK_BYTES, starts[2]
    assert gap[0] < gap[1], "the file is too small to have bytes outside the sampled blocks"
    return (gap[0] + gap[1]) // 2


def test_manifest_records_size_and_hashes(built):
    _, _, folder, _ = built
    manifest = json.loads((folder / artifacts.MANIFEST_FILE).read_text())
    assert manifest["format"] == artifacts.MANIFEST_FORMAT
    assert manifest["model_key"] == json.loads((folder / artifacts.SOURCE_FILE).read_text())["model_key"]
    for name in (tables.TABLES_FILE, tables.MLP_FILE, calibration.CACHE_FILE):
        data = (folder / name).read_bytes()
        entry = manifest["files"][name]
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    size = manifest["files"][tables.TABLES_FILE]["size"]
    assert size > artifacts.BLOCKS * artifacts.BLOCK_BYTES and len(artifacts.sample_offsets(size)) == artifacts.BLOCKS
    assert artifacts.sample_offsets(size)[-1] == size - artifacts.BLOCK_BYTES


def test_corruption_in_a_sampled_block_is_refused_then_rebuilt(built, capsys):
    model, meta, folder, flags = built
    path = folder / tables.TABLES_FILE
    good = path.read_bytes()
    flip_byte(path, artifacts.sample_offsets(len(good))[40] + 1000)
    with pytest.raises(DataError) as err:
        artifacts.load_int8_model(model, meta)
    message = str(err.value)
    assert str(path) in message and "sampled_sha256" in message and "make generate_engines" in message
    assert cli(["generate-engines", *flags]) == 0
    assert "rebuilding (dlrm_embedding_weights_int8_v3.bin: sampled_sha256 is" in capsys.readouterr().out
    assert path.read_bytes() == good
    artifacts.load_int8_model(model, meta)


def test_corruption_anywhere_is_found_by_verify(built, capsys):
    model, meta, folder, flags = built
    path = folder / tables.TABLES_FILE
    good = path.read_bytes()
    flip_byte(path, unsampled_offset(len(good)))
    artifacts.check_int8_artifacts(model)  # the sampled check cannot see it
    with pytest.raises(DataError, match=rf"{path}: sha256 is [0-9a-f]{{64}}, expected "
                                        rf"{hashlib.sha256(good).hexdigest()}"):
        artifacts.check_int8_artifacts(model, verify=True)
    capsys.readouterr()
    assert cli(["generate-engines", *flags]) == 0
    assert BUILDING not in capsys.readouterr().out and path.read_bytes() != good
    assert cli(["generate-engines", "--verify", *flags]) == 0
    assert "rebuilding (dlrm_embedding_weights_int8_v3.bin: sha256 is" in capsys.readouterr().out
    assert path.read_bytes() == good
    artifacts.check_int8_artifacts(model, verify=True)


def test_truncated_tables_are_refused_then_rebuilt(built, capsys):
    model, meta, folder, flags = built
    path = folder / tables.TABLES_FILE
    size = path.stat().st_size
    os.truncate(path, size - 128)
    with pytest.raises(DataError, match=rf"{path}: size is {size - 128}, expected {size} .*make generate_engines"):
        artifacts.load_int8_model(model, meta)
    assert cli(["generate-engines", *flags]) == 0
    assert f"rebuilding (dlrm_embedding_weights_int8_v3.bin: size is {size - 128}" in capsys.readouterr().out
    assert path.stat().st_size == size
    artifacts.load_int8_model(model, meta)


def test_missing_manifest_is_refused_then_rebuilt(built, capsys):
    model, meta, folder, flags = built
    (folder / artifacts.MANIFEST_FILE).unlink()
    with pytest.raises(DataError, match=r"no entry in .*manifest.json.*make generate_engines"):
        artifacts.load_int8_model(model, meta)
    assert cli(["generate-engines", *flags]) == 0
    out = capsys.readouterr().out
    assert "rebuilding (dlrm_embedding_weights_int8_v3.bin: no entry in" in out and "recalibrating (" in out
    assert set(artifacts.read_manifest(folder)["files"]) == {tables.TABLES_FILE, tables.MLP_FILE,
                                                             calibration.CACHE_FILE}
    artifacts.load_int8_model(model, meta)


def test_engine_first_start_builds_with_a_manifest(tmp_path):
    data = write_preprocessed_dataset(tmp_path / "data", num_days=1, rows_per_day=200, test_rows=100,
                                      calibration_rows=100)
    model = save_random_model(tmp_path / "m.pt", TINY_CARDINALITIES, seed=2)
    folder = artifacts.load_int8_model(model, load_meta(data)).directory
    assert set(artifacts.read_manifest(folder)["files"]) == {tables.TABLES_FILE, tables.MLP_FILE,
                                                             calibration.CACHE_FILE}
    artifacts.check_int8_artifacts(model, verify=True)


def _edit_cache(cache: Path, key: str, index: int, value: float) -> None:
    """Set the ranges key[index:] of a calibration cache to `value`."""
    data = json.loads(cache.read_text())
    data["ranges"][key][index:] = [value] * (len(data["ranges"][key]) - index)
    cache.write_text(json.dumps(data))


def test_changed_or_invalid_calibration_cache_is_refused_then_recalibrated(built, capsys):
    model, meta, folder, flags = built
    cache = folder / calibration.CACHE_FILE
    good = calibration.load_ranges(cache)
    _edit_cache(cache, "top_l.2", 7, float("nan"))
    with pytest.raises(DataError, match=rf"{cache}: size is .*make generate_engines"):
        artifacts.load_int8_model(model, meta)
    artifacts.record_manifest(folder, [calibration.CACHE_FILE])  # as if a bad range had been written and recorded
    with pytest.raises(DataError, match=rf"calibration cache {cache}: range top_l\.2\[7\] is nan, expected a "
                                        rf"finite value >= 0; `make generate_engines` will rebuild it"):
        artifacts.load_int8_model(model, meta)
    assert cli(["generate-engines", *flags]) == 0
    assert "recalibrating (calibration cache" in capsys.readouterr().out
    assert all(bool((calibration.load_ranges(cache)[k] == v).all()) for k, v in good.items())
    artifacts.load_int8_model(model, meta)


def _ranges(value: float = 1.0) -> dict[str, torch.Tensor]:
    return {"numeric_input": torch.full((13,), value), **{k: torch.full((w,), value)
                                                          for k, w in calibration.WIDTHS.items()}}


@pytest.mark.parametrize("key, index, value, expected", [
    ("top_l.2", 7, float("nan"), r"range top_l\.2\[7\] is nan, expected a finite value >= 0"),
    ("interaction", 3, -0.5, r"range interaction\[3\] is -0\.5, expected a finite value >= 0"),
    ("numeric_input", 1, float("inf"), r"range numeric_input\[1\] is inf"),
    ("bot_l.4", 0, 0.0, r"every range of bot_l\.4 is 0"),
])
def test_calibration_ranges_are_checked_when_written_and_read(tmp_path, key, index, value, expected):
    path = tmp_path / calibration.CACHE_FILE
    bad = _ranges()
    bad[key][index:] = value
    with pytest.raises(DataError, match=rf"calibration cache {path}: {expected}.*; the model gave this"):
        calibration.write_cache(path, bad, "key", "fingerprint", 10)
    assert not path.exists()
    calibration.write_cache(path, _ranges(), "key", "fingerprint", 10)
    _edit_cache(path, key, index, value)
    with pytest.raises(DataError, match=rf"calibration cache {path}: {expected}.*; `make generate_engines`"):
        calibration.read_cache(path, "key")


def test_a_dead_relu_channel_is_a_valid_range(tmp_path):
    """A ReLU channel that never fires has range 0; the reference init gives dozens of them."""
    ranges = _ranges()
    ranges["top_l.4"][5] = 0.0
    calibration.write_cache(tmp_path / "c.json", ranges, "key", "fingerprint", 10)
    assert float(calibration.read_cache(tmp_path / "c.json", "key")["top_l.4"][5]) == 0.0


def test_model_folder_is_recorded_on_first_use(tmp_path, capsys):
    from dlrm_bench import random_preset

    folder = random_preset.generate_model(tmp_path / "preset", TINY_CARDINALITIES, seed=1, device="cpu",
                                          chunk_rows=700, progress=False)
    artifacts.check_int8_artifacts(folder)
    assert "recording manifest.json of the model folder" in capsys.readouterr().out
    flip_byte(folder / tables.TABLES_FILE, 200)
    with pytest.raises(DataError, match="sampled_sha256 .*regenerate the model folder"):
        artifacts.check_int8_artifacts(folder)
    random_preset.generate_model(folder, TINY_CARDINALITIES, seed=1, device="cpu", chunk_rows=700, progress=False,
                                 force=True)
    artifacts.check_int8_artifacts(folder, verify=True)  # recorded again: the folder was made again


def _wait_for(paths: list[Path], text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(text in p.read_text() for p in paths):
        assert time.monotonic() < deadline, [p.read_text() for p in paths]
        time.sleep(0.05)


def test_two_processes_build_once(tmp_path):
    """Both wait on the lock (held here until they do); the first to get it builds, the other finds the files
    current."""
    data = write_preprocessed_dataset(tmp_path / "data", num_days=1, rows_per_day=200, test_rows=100,
                                      calibration_rows=100)
    model = save_random_model(tmp_path / "m.pt", TINY_CARDINALITIES, seed=3)
    folder = artifacts.derived_dir(model)
    folder.mkdir()
    env = {**os.environ, "MLPERF_SCRATCH_PATH": str(tmp_path / "scratch")}
    command = [sys.executable, "-m", "dlrm_bench.cli", "generate-engines", "--dataset-dir", str(data),
               "--model", str(model)]
    logs = [tmp_path / f"out{i}.txt" for i in range(2)]
    outs = [open(log, "w") for log in logs]
    with open(folder / artifacts.LOCK_FILE, "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        procs = [subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env) for out in outs]
        _wait_for(logs, f"waiting for another process building the int8 engine files (lock {lock.name})")
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    for out in outs:
        out.close()
    outputs = [log.read_text() for log in logs]
    assert sum(out.count(BUILDING) for out in outputs) == 1, outputs
    artifacts.check_int8_artifacts(model, verify=True)
