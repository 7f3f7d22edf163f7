"""Files derived from a model for the int8 engines, in `build/models/dlrm/<model>/`, and when they are stale.

    dlrm_embedding_weights_int8_v3.bin         int8 tables + per-table scales (quant/tables.py)
    model_test_without_embedding_weights_v3.pt the MLP weights (reference keys bot_l.*, top_l.*)
    source.json                                the key of the checkpoint they came from
    calibration_cache.json                     activation ranges (quant/calibration.py)
    manifest.json                              size and sha256 (whole file, sampled blocks) of the three above
    .build.lock                                flock held while a process checks and builds them

A model's key is its size, mtime and a hash of its first and last MiB: a replaced checkpoint gets new split files
on the next build (`make generate_engines`, or the engine's first start) and its old calibration cache is
refused by name until `make calibrate` runs. A model may also be a derived folder itself (the criteo-tb-random
preset, generated directly as int8): then its source.json carries the key.

Every start checks the files against manifest.json (size + 64 sampled 64 KiB blocks: milliseconds for 24 GB);
`verify` hashes every byte. A mismatch, or a file without an entry, is refused by name at an engine's start and
rebuilt by `make generate_engines`; an engine's first start builds missing files itself, with their entries. A
model folder's generator writes no manifest: its files are recorded as they are on first use.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from dlrm_bench.atomic import save_json
from dlrm_bench.criteo.dataset import DatasetMeta, open_split
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.quant import calibration, tables
from dlrm_bench.quant.recipe import QuantizedDLRM, build_quantized

SOURCE_FILE = "source.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
LOCK_FILE = ".build.lock"
SPLIT_FILES = (tables.TABLES_FILE, tables.MLP_FILE)
HASH_BYTES = 1 << 20
BLOCK_BYTES = 64 << 10
BLOCKS = 64
REBUILD = "`make generate_engines` will rebuild it"
FOLDER_FIX = "regenerate the model folder (`dlrm-bench make-random-preset --what model --force`)"
_thread_lock = threading.RLock()
_held: set[Path] = set()


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


def sample_offsets(size: int) -> list[int]:
    """Starts of the sampled blocks: BLOCKS blocks of BLOCK_BYTES spread evenly from the first to the last byte
    (every block of a file smaller than that)."""
    if size <= BLOCKS * BLOCK_BYTES:
        return list(range(0, size, BLOCK_BYTES))
    return [i * (size - BLOCK_BYTES) // (BLOCKS - 1) for i in range(BLOCKS)]


def file_hashes(path: Path, full: bool = True) -> dict[str, int | str]:
    """{"size", "sampled_sha256"} (sha256 of the size in decimal, then the sampled blocks), plus "sha256" of the
    whole file when `full`."""
    size = path.stat().st_size
    sampled, whole = hashlib.sha256(str(size).encode()), hashlib.sha256()
    with open(path, "rb") as f:
        for offset in sample_offsets(size):
            f.seek(offset)
            sampled.update(f.read(BLOCK_BYTES))
        f.seek(0)
        while full and (chunk := f.read(16 * HASH_BYTES)):
            whole.update(chunk)
    out: dict[str, int | str] = {"size": size, "sampled_sha256": sampled.hexdigest()}
    return {**out, "sha256": whole.hexdigest()} if full else out


def read_manifest(directory: Path) -> dict:
    """The folder's manifest.json ({} when absent, unreadable or of another format: no file counts as recorded)."""
    try:
        data = json.loads((directory / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT and isinstance(data.get("files"), dict)
    return data if ok else {}


def record_manifest(directory: Path, names: Sequence[str], model_key: str | None = None) -> None:
    """Hash the files `names` of `directory` into its manifest (atomically), keeping the other entries; model_key,
    when given, names the model the split files were made from."""
    data = read_manifest(directory) or {"format": MANIFEST_FORMAT, "files": {}}
    if model_key is not None:
        data["model_key"] = model_key
    data["files"].update({name: file_hashes(directory / name) for name in names})
    save_json(directory / MANIFEST_FILE, data)


def file_problem(directory: Path, name: str, verify: bool = False) -> str | None:
    """Why file `name` of `directory` fails its manifest entry (None when it passes): missing, no entry, other
    size, other sampled-block sha256, or (verify) other whole-file sha256."""
    path, entry = directory / name, read_manifest(directory).get("files", {}).get(name)
    if not path.exists():
        return "the file is missing"
    if not isinstance(entry, dict):
        return f"no entry in {directory / MANIFEST_FILE} (made by an older version, or not by dlrm-bench)"
    found: dict[str, int | str] = {"size": path.stat().st_size}
    if found["size"] == entry.get("size"):
        found = file_hashes(path, full=verify)
    for field, value in found.items():
        if value != entry.get(field):
            return f"{field} is {value}, expected {entry.get(field)} (from {MANIFEST_FILE})"
    return None


def check_files(directory: Path, names: Sequence[str], verify: bool = False, fix: str = REBUILD) -> None:
    """DataError naming the first of `names` that fails its manifest entry, with what was expected and found."""
    for name in names:
        problem = file_problem(directory, name, verify)
        if problem:
            raise DataError(f"{directory / name}: {problem}; {fix}")


@contextlib.contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive flock on `directory`/.build.lock (re-entrant in a process); another process holding it is
    waited for, with one line naming the lock. A folder where no lock file can be made is used unlocked."""
    lock = Path(directory) / LOCK_FILE
    with _thread_lock:
        if lock in _held:
            yield
            return
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "ab")
        except OSError:
            handle = None
        with handle if handle is not None else contextlib.nullcontext():
            if handle is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    print(f"waiting for another process building the int8 engine files (lock {lock}) ...", flush=True)
                    fcntl.flock(handle, fcntl.LOCK_EX)
            _held.add(lock)
            try:
                yield
            finally:
                _held.discard(lock)


def _adopt_folder(directory: Path) -> None:
    """A model folder's generator writes no manifest: record its split files as they are, once per writing of its
    source.json (the generator writes it last; the MLP file of a forced regeneration is not byte-identical)."""
    key = f"{model_key(directory)}@{(directory / SOURCE_FILE).stat().st_mtime_ns}"
    manifest = read_manifest(directory)
    recorded = manifest.get("model_key") == key and all(n in manifest.get("files", {}) for n in SPLIT_FILES)
    if not recorded and all((directory / n).exists() for n in SPLIT_FILES):
        print(f"recording {MANIFEST_FILE} of the model folder {directory} (its files as they are now)", flush=True)
        record_manifest(directory, SPLIT_FILES, key)


def _build_split(model_path: Path, meta: DatasetMeta, verify: bool = False, repair: bool = True) -> Path:
    """Split the checkpoint into the int8 tables and the MLP file unless files made from it pass their manifest.
    repair=False (an engine's start): files that fail it are an error rather than rebuilt."""
    from dlrm_bench.model.checkpoint import load_for_dataset, save_checkpoint

    directory, key = derived_dir(model_path), model_key(model_path)
    if Path(model_path).is_dir():
        _adopt_folder(directory)
        check_files(directory, SPLIT_FILES, verify, FOLDER_FIX)
        return directory
    old = directory / SOURCE_FILE
    reason = "rebuilding (the checkpoint changed)" if old.exists() else "building"
    if _split_is_current(directory, key):
        problems = [f"{n}: {p}" for n in SPLIT_FILES if (p := file_problem(directory, n, verify))]
        if not problems:
            return directory
        if not repair:
            raise DataError(f"{directory}/{problems[0]}; {REBUILD}")
        reason = f"rebuilding ({problems[0]})"
    print(f"{reason} int8 engine files from {model_path} into {directory} ...", flush=True)
    ckpt = load_for_dataset(model_path, meta.cardinalities, dataset=meta.name)
    directory.mkdir(parents=True, exist_ok=True)
    old.unlink(missing_ok=True)
    tables.split_checkpoint_tables(ckpt.state_dict, directory / tables.TABLES_FILE)
    mlp = {k: v for k, v in ckpt.state_dict.items() if not k.startswith("emb_l.")}
    save_checkpoint(directory / tables.MLP_FILE, mlp)
    record_manifest(directory, SPLIT_FILES, key)
    save_json(old, {"model_key": key, "checkpoint": str(Path(model_path).resolve())})
    return directory


def _cache_problem(directory: Path, verify: bool) -> str | None:
    """Why the calibration cache in `directory` must be rebuilt (invalid ranges, fails its manifest), else None."""
    try:
        calibration.load_ranges(directory / calibration.CACHE_FILE)
    except UserError as exc:
        return str(exc)
    return file_problem(directory, calibration.CACHE_FILE, verify)


def generate_engines(model_path: Path, meta: DatasetMeta, verify: bool = False) -> Path:
    """Make the int8 engine files current under the folder's lock: (re)build the split files unless made from
    this checkpoint and matching their manifest (every byte hashed when `verify`), and recalibrate a calibration
    cache that fails its manifest or holds invalid ranges. Returns the folder."""
    directory = derived_dir(model_path)
    with build_lock(directory):
        _build_split(model_path, meta, verify)
        cache = directory / calibration.CACHE_FILE
        problem = _cache_problem(directory, verify) if cache.exists() else None
        if problem:
            print(f"recalibrating ({problem})", flush=True)
            _calibrate(model_path, meta)
    return directory


def check_int8_artifacts(model_path: Path, verify: bool = False) -> None:
    """Check the engine files and calibration cache of `model_path` that exist against their manifest (size and
    sampled blocks; every byte when `verify`), building nothing; DataError on a mismatch. Split files made from
    another checkpoint are skipped (an engine's start rebuilds them)."""
    directory, is_folder = derived_dir(model_path), Path(model_path).is_dir()
    with build_lock(directory):
        key = model_key(model_path)
        if is_folder:
            _adopt_folder(directory)
        if is_folder or _split_is_current(directory, key):
            check_files(directory, SPLIT_FILES, verify, FOLDER_FIX if is_folder else REBUILD)
        if (directory / calibration.CACHE_FILE).exists():
            check_files(directory, [calibration.CACHE_FILE], verify)


def _lookup_for(model_path: Path, meta: DatasetMeta) -> calibration.Lookup:
    """FP32 table rows: from the checkpoint when there is one, else the int8 rows times their scale."""
    if Path(model_path).is_file():
        from dlrm_bench.model.checkpoint import load_checkpoint

        sd = load_checkpoint(model_path).state_dict
        return lambda t, ids: sd[f"emb_l.{t}.weight"][torch.from_numpy(ids.astype(np.int64))].float()
    scales, rows = tables.read_tables(derived_dir(model_path) / tables.TABLES_FILE, meta.cardinalities)
    return tables.dequantized_lookup(scales, rows, meta.cardinalities)


def calibrate(model_path: Path, meta: DatasetMeta) -> Path:
    """Write the calibration cache for `model_path` from the dataset's calibration split (split files first)."""
    with build_lock(derived_dir(model_path)):
        _build_split(model_path, meta)
        return _calibrate(model_path, meta)


def _calibrate(model_path: Path, meta: DatasetMeta) -> Path:
    """The calibration cache from current split files, recorded in the manifest."""
    from dlrm_bench.model.checkpoint import load_checkpoint

    directory = derived_dir(model_path)
    split = open_split(meta.directory / "calibration")
    mlp = load_checkpoint(directory / tables.MLP_FILE).state_dict
    print(f"calibrating on {len(split):,} rows of {split.directory} ...", flush=True)
    ranges = calibration.compute_ranges(mlp, _lookup_for(model_path, meta), split)
    path = directory / calibration.CACHE_FILE
    calibration.write_cache(path, ranges, model_key(model_path), meta.fingerprint, len(split), meta.name)
    record_manifest(directory, [calibration.CACHE_FILE])
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
    dataset) is an error that names it, and so is a file that fails its manifest (size, sampled blocks).
    """
    from dlrm_bench.model.checkpoint import load_checkpoint

    directory = derived_dir(model_path)
    with build_lock(directory):
        _build_split(model_path, meta, repair=False)
        cache = directory / calibration.CACHE_FILE
        if not cache.exists():
            _calibrate(model_path, meta)
        check_files(directory, [calibration.CACHE_FILE])
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
    directory = generate_engines(model_path, meta, verify=getattr(args, "verify", False))
    print(f"int8 engine files: {directory}")
    return 0


def calibrate_main(args: argparse.Namespace) -> int:
    meta, model_path = _inputs(args)
    calibrate(model_path, meta)
    return 0
