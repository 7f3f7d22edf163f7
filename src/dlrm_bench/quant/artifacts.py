"""Files derived from a model for the int8 engines, in `build/models/dlrm/<model>/`, and when they are stale.

    dlrm_embedding_weights_int8_v3.bin         int8 tables + per-table scales (quant/tables.py)
    model_test_without_embedding_weights_v3.pt the MLP weights (reference keys bot_l.*, top_l.*)
    source.json                                the key of the checkpoint they came from
    calibration_cache.json                     activation ranges (quant/calibration.py)

A model's key is its size, mtime and a hash of its first and last MiB: a replaced checkpoint gets new split files
on the next build (`make generate_engines`, or the engine's first start) and its old calibration cache is
refused by name until `make calibrate` runs. A model may also be a derived folder itself (the criteo-tb-random
preset, generated directly as int8): then its source.json carries the key.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dlrm_bench.atomic import save_json
from dlrm_bench.criteo.dataset import DatasetMeta, open_split
from dlrm_bench.errors import UserError
from dlrm_bench.quant import calibration, tables
from dlrm_bench.quant.recipe import QuantizedDLRM, build_quantized

SOURCE_FILE = "source.json"
HASH_BYTES = 1 << 20


def derived_dir(model_path: Path) -> Path:
    """build/models/dlrm/tb00_40M.pt -> build/models/dlrm/tb00_40M/ (a folder model is its own)."""
    model_path = Path(model_path)
    return model_path if model_path.is_dir() else model_path.with_suffix("")


def file_key(path: Path) -> str:
    """size:mtime_ns:sha256(first MiB + last MiB)[:16] -- cheap even for a 96 GB file."""
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(HASH_BYTES))
        if st.st_size > 2 * HASH_BYTES:
            f.seek(-HASH_BYTES, 2)
            h.update(f.read(HASH_BYTES))
    return f"{st.st_size}:{st.st_mtime_ns}:{h.hexdigest()[:16]}"


def model_key(model_path: Path) -> str:
    model_path = Path(model_path)
    if model_path.is_dir():
        source = model_path / SOURCE_FILE
        if not source.exists():
            raise UserError(f"{model_path}: a model folder needs {SOURCE_FILE} (written by its generator)")
        return str(json.loads(source.read_text())["model_key"])
    if not model_path.exists():
        raise UserError(f"model {model_path} not found")
    return file_key(model_path)


def _split_is_current(directory: Path, key: str) -> bool:
    source = directory / SOURCE_FILE
    if not source.exists() or not (directory / tables.TABLES_FILE).exists() or not (directory / tables.MLP_FILE).exists():
        return False
    return json.loads(source.read_text()).get("model_key") == key


def generate_engines(model_path: Path, meta: DatasetMeta) -> Path:
    """Split the checkpoint into the int8 tables and the MLP file unless current ones exist. Returns the folder."""
    from dlrm_bench.model.checkpoint import load_for_dataset, save_checkpoint

    directory = derived_dir(model_path)
    key = model_key(model_path)
    if _split_is_current(directory, key):
        return directory
    if Path(model_path).is_dir():
        raise UserError(f"{model_path}: model folder is incomplete ({tables.TABLES_FILE} or {tables.MLP_FILE} missing)")
    old = directory / SOURCE_FILE
    print(f"{'rebuilding (the checkpoint changed)' if old.exists() else 'building'} int8 engine files from "
          f"{model_path} into {directory} ...", flush=True)
    ckpt = load_for_dataset(model_path, meta.cardinalities, dataset=meta.name)
    directory.mkdir(parents=True, exist_ok=True)
    old.unlink(missing_ok=True)
    tables.split_checkpoint_tables(ckpt.state_dict, directory / tables.TABLES_FILE)
    mlp = {k: v for k, v in ckpt.state_dict.items() if not k.startswith("emb_l.")}
    save_checkpoint(directory / tables.MLP_FILE, mlp)
    save_json(old, {"model_key": key, "checkpoint": str(Path(model_path).resolve())})
    return directory


def _lookup_for(model_path: Path, meta: DatasetMeta) -> calibration.Lookup:
    """FP32 table rows: from the checkpoint when there is one, else the int8 rows times their scale."""
    if Path(model_path).is_file():
        from dlrm_bench.model.checkpoint import load_checkpoint

        sd = load_checkpoint(model_path).state_dict
        return lambda t, ids: sd[f"emb_l.{t}.weight"][torch.from_numpy(ids.astype(np.int64))].float()
    scales, rows = tables.read_tables(derived_dir(model_path) / tables.TABLES_FILE, meta.cardinalities)
    return tables.dequantized_lookup(scales, rows, meta.cardinalities)


def calibrate(model_path: Path, meta: DatasetMeta) -> Path:
    """Write the calibration cache for `model_path` from the dataset's calibration split."""
    directory = generate_engines(model_path, meta)
    split = open_split(meta.directory / "calibration")
    from dlrm_bench.model.checkpoint import load_checkpoint

    mlp = load_checkpoint(directory / tables.MLP_FILE).state_dict
    print(f"calibrating on {len(split):,} rows of {split.directory} ...", flush=True)
    ranges = calibration.compute_ranges(mlp, _lookup_for(model_path, meta), split)
    path = directory / calibration.CACHE_FILE
    calibration.write_cache(path, ranges, model_key(model_path), meta.fingerprint, len(split), meta.name)
    print(f"calibration cache: {path}", flush=True)
    return path


@dataclass
class Int8Model:
    """What an int8 engine loads: tables (memory-mapped) and the quantized MLPs."""

    directory: Path
    table_scales: np.ndarray
    tables: np.ndarray
    table_offsets: np.ndarray
    quantized: QuantizedDLRM


def load_int8_model(model_path: Path, meta: DatasetMeta) -> Int8Model:
    """Split files (built on first use or when the checkpoint changed) and the calibrated quantized MLPs.

    A missing calibration cache is computed once; a stale one (another model, or an earlier version of this
    dataset) is an error that names it.
    """
    from dlrm_bench.model.checkpoint import load_checkpoint

    directory = generate_engines(model_path, meta)
    cache = directory / calibration.CACHE_FILE
    if not cache.exists():
        calibrate(model_path, meta)
    ranges = calibration.read_cache(cache, model_key(model_path), meta.name, meta.fingerprint)
    scales, rows = tables.read_tables(directory / tables.TABLES_FILE, meta.cardinalities)
    mlp = load_checkpoint(directory / tables.MLP_FILE).state_dict
    qm = build_quantized(mlp, torch.from_numpy(scales.copy()), ranges)
    return Int8Model(directory, scales, rows, tables.table_offsets(meta.cardinalities), qm)


def _inputs(args: argparse.Namespace) -> tuple[DatasetMeta, Path]:
    from dlrm_bench.inputs import resolve_inputs

    return resolve_inputs(args.dataset, args.dataset_dir, args.model, prepare=False)


def generate_engines_main(args: argparse.Namespace) -> int:
    meta, model_path = _inputs(args)
    directory = generate_engines(model_path, meta)
    print(f"int8 engine files: {directory}")
    return 0


def calibrate_main(args: argparse.Namespace) -> int:
    meta, model_path = _inputs(args)
    calibrate(model_path, meta)
    return 0
