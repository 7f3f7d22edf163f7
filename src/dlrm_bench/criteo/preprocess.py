"""Raw Criteo days -> the preprocessed dataset of docs/FORMATS.md, with the MLPerf reference's semantics.

Semantics: dense counts, missing or negative -> 0, then log1p; categories int(hex, 16) % max_ind_range (empty ->
0), then per feature j a contiguous id in order of first appearance over all days in day order (the id of a value
is its index in `dictionaries/feature_j.npy`). Test = the first ceil(N/2) rows of the last day, calibration = the
next min(128000, rest); training days = all but the last, under `days/day_k/`.

Stages (each resumable; state lives in `<output>/.work/` until the run completes, then is removed):

1. scan   (parallel over days)     parse each day once; per feature, the hashed values in order of first
                                   appearance within the day -> .work/scan/day_k.npz, .json (rows, bad rows)
2. merge  (parallel over features) concatenate the per-day lists in day order, keeping values not seen in an
                                   earlier day -> dictionaries/feature_j.npy; lookup tables -> .work/lookup/
3. write  (parallel over days)     parse each day again, map hashed values to ids, write the split arrays and
                                   per-day row lookup counts -> .work/freq/day_k.npz, marker .work/write/day_k.json
4. finish                          row_frequencies.bin (sum over the training days), the aggregation trace of the
                                   test set, optional compressed categorical inputs, meta.json (written last).

Every file is written under a temporary name and renamed when complete (dlrm_bench.atomic), and a stage's marker is
written after its files, so an interrupted run resumes at the first incomplete day and a re-run whose inputs are
unchanged (same file names, sizes and modification times, same options) only checks and returns.

Memory per worker (R = max_ind_range, C = sum of cardinalities, D = distinct values of a day over all features):
scan 26 R bytes (first-seen flags) + 4-8 D bytes; merge ~10 R bytes; write 4 C bytes (per-day lookup counts) plus
the lookup tables, memory-mapped and shared through the page cache; finish ~12 max(cardinality) bytes; plus ~0.1
GB of parse buffers. Real data (R = 40M, C = 188M, D ~ 100M): ~1.7 GB per worker at the peak (scan); the default
worker count is capped by available memory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from dlrm_bench import paths
from dlrm_bench.atomic import atomic_path, save_json
from dlrm_bench.criteo.frequencies import FrequencyCounter, write_row_frequencies
from dlrm_bench.criteo.reader import DEFAULT_CHUNK_BYTES, DayReader, RawChunk, day_files
from dlrm_bench.criteo.schema import (
    CALIBRATION_ROWS, DEFAULT_MAX_IND_RANGE, NUM_DAYS, NUM_DENSE, NUM_FIELDS, NUM_SPARSE,
)
from dlrm_bench.errors import DataError, UserError

FORMAT_VERSION = 1
WORK_DIR = ".work"
TRASH_DIR = ".work.trash"
"""The work folder is renamed to this (one atomic step) before it is deleted, so a run killed while deleting it
never leaves a half-deleted work folder that a later run would trust."""
INT8_NUMERIC_MAX = 14.2313
"""numeric_int8 = trunc(numeric_fp32 * 127 / 14.2313), clipped to 127 (log1p counts above 14.2313, i.e. counts
above ~1.5 million, saturate)."""
DENSE_LOOKUP_MAX_BYTES = 16 << 20
"""A feature gets a dense hashed-value -> id table when it is this small or at most 64x its cardinality;
otherwise a hash table (HashIndex)."""
TRAIN_ARRAYS = ("ground_truth.npy", "numeric_fp32.npy", "categorical_int32.npy")
EVAL_ARRAYS = TRAIN_ARRAYS + ("numeric_fp16.npy", "numeric_int8_linear.npy", "numeric_int8_chw4.npy", "data.bin")
COMPRESSED = "categorical_int32_compressed.npy"


@dataclass(frozen=True)
class PreprocessOptions:
    """Knobs of `preprocess`; the ones marked (content) change the output and so the source signature."""

    max_ind_range: int = DEFAULT_MAX_IND_RANGE          # (content)
    skip_bad_rows: bool = False                         # (content)
    calibration_rows: int = CALIBRATION_ROWS            # (content)
    workers: int | None = None
    compress: bool = False
    quantile_file: Path | None = None
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    progress: bool = True


@dataclass(frozen=True)
class _Job:
    """What every worker needs (picklable)."""

    days: tuple[Path, ...]
    output: Path
    options: PreprocessOptions
    cardinalities: tuple[int, ...] = ()

    @property
    def work(self) -> Path:
        return self.output / WORK_DIR

    @property
    def num_days(self) -> int:
        return len(self.days)

    def is_last(self, k: int) -> bool:
        return k == self.num_days - 1


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def main(args: argparse.Namespace) -> int:
    """`dlrm-bench preprocess [--raw-dir D] [--output D] [--name N] [--max-ind-range R] [--skip-bad-rows]
    [--workers W] [--compress] [--quantile-file F]`."""
    name = args.name
    raw_dir = args.raw_dir or paths.raw_days_dir(name)
    output = args.output or paths.preprocessed_dir(name)
    options = PreprocessOptions(max_ind_range=args.max_ind_range, skip_bad_rows=args.skip_bad_rows,
                                workers=args.workers, compress=args.compress, quantile_file=args.quantile_file,
                                progress=sys.stderr.isatty())
    meta = preprocess(Path(raw_dir), Path(output), name, options)
    _print_summary(meta)
    return 0


def preprocess(raw_dir: Path, output_dir: Path, name: str, options: PreprocessOptions = PreprocessOptions(),
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Preprocess the day files under `raw_dir` into `output_dir`; returns the meta.json content.

    Resumes an interrupted run; returns at once (after checking) when the dataset is up to date.
    """
    _check_options(options)
    days = tuple(day_files(raw_dir))
    if name == "terabyte" and len(days) != NUM_DAYS:
        log(f"note: {len(days)} day files under {raw_dir}; the MLPerf dataset has {NUM_DAYS}")
    output_dir = Path(output_dir).resolve()
    job = _Job(days, output_dir, options)
    signature = source_signature(days, options)
    meta = _current_meta(output_dir, signature)
    if meta is not None:
        log(f"{output_dir}: up to date (inputs and options unchanged)")
        _discard_work(job)  # left behind if the previous run was killed just after writing meta.json
        return _finish_extras(job, meta, log)
    _start(job)
    started = time.perf_counter()
    scans = _timed("scan", log, lambda: _stage_scan(job, log))
    cards = _timed("merge", log, lambda: _stage_merge(job, log))
    job = _Job(days, output_dir, options, cards)
    writes = _timed("write", log, lambda: _stage_write(job, scans, log))
    meta = _timed("finish", log, lambda: _stage_finish(job, name, raw_dir, signature, scans, writes, log))
    log(f"preprocessed {sum(s['rows'] for s in scans)} rows of {len(days)} days in "
        f"{time.perf_counter() - started:.1f} s -> {output_dir}")
    return meta


def _timed(stage: str, log: Callable[[str], None], fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = fn()
    log(f"{stage}: done in {time.perf_counter() - start:.1f} s")
    return result


def _check_options(options: PreprocessOptions) -> None:
    if not 1 <= options.max_ind_range <= 2 ** 31:
        raise UserError(f"--max-ind-range must be between 1 and 2**31, got {options.max_ind_range}")
    if options.calibration_rows < 0:
        raise UserError("calibration_rows must be >= 0")
    if options.workers is not None and options.workers < 1:
        raise UserError(f"--workers must be >= 1, got {options.workers}")


def source_signature(days: Sequence[Path], options: PreprocessOptions) -> dict[str, Any]:
    """What the content depends on: the day files (name, size, mtime) and the content options."""
    files = []
    for p in days:
        st = os.stat(p)
        files.append([p.name, st.st_size, st.st_mtime_ns])
    return {"format": FORMAT_VERSION, "max_ind_range": options.max_ind_range,
            "skip_bad_rows": options.skip_bad_rows, "calibration_rows": options.calibration_rows,
            "source_dir": str(Path(days[0]).parent.resolve()), "days": files}


def _current_meta(output: Path, signature: dict[str, Any]) -> dict[str, Any] | None:
    """meta.json if the dataset there is complete and was made from the same inputs and options."""
    path = output / "meta.json"
    if not path.exists():
        return None
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        return None
    if meta.get("source") != signature:
        return None
    if not all((output / rel).exists() for rel in meta.get("files", {})):
        return None
    return meta


def _start(job: _Job) -> None:
    """Invalidate a finished dataset made from other inputs (meta.json goes first); keep the work folder, whose
    markers each record the inputs they were made from and are redone when those differ."""
    with contextlib.suppress(FileNotFoundError):
        (job.output / "meta.json").unlink()
    shutil.rmtree(job.output / TRASH_DIR, ignore_errors=True)
    job.work.mkdir(parents=True, exist_ok=True)
    for leftover in job.output.rglob(".*.tmp"):  # temporary files of a killed run (atomic_path's names)
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _day_source(job: _Job, k: int) -> list[Any]:
    """What day k's scan depends on: file name, size, mtime, max_ind_range, skip_bad_rows."""
    st = os.stat(job.days[k])
    return [job.days[k].name, st.st_size, st.st_mtime_ns, job.options.max_ind_range, job.options.skip_bad_rows]


def _valid_marker(path: Path, key: str, expected: Any) -> dict[str, Any] | None:
    """The marker's content when it exists and its `key` equals `expected`."""
    if not path.exists():
        return None
    try:
        content = json.loads(path.read_text())
    except ValueError:
        return None
    return content if content.get(key) == expected else None


# ----------------------------------------------------------------------------------------------------------------
# Parallel execution with progress

_REPORT: Callable[[int], None] | None = None
"""Progress callback in the current process (a queue's put in pool workers)."""


def _init_worker(queue: Any) -> None:
    global _REPORT
    _REPORT = queue.put


def _report(amount: int) -> None:
    if _REPORT is not None:
        _REPORT(amount)


def _run_tasks(fn: Callable[..., Any], tasks: Sequence[tuple], workers: int, total: int, desc: str,
               unit: str, show: bool) -> list[Any]:
    """Run fn(*task) for each task (in worker processes when workers > 1); results in task order.

    Workers are forked where the platform allows (no re-import of the caller's main module), before the progress
    bar starts its monitor thread.
    """
    global _REPORT
    from dlrm_bench.progress import progress_bar

    if workers <= 1 or len(tasks) <= 1:
        with progress_bar(total=total, desc=desc, unit=unit, unit_scale=True, disable=not show, leave=False) as bar:
            _REPORT = bar.update
            try:
                return [fn(*t) for t in tasks]
            finally:
                _REPORT = None
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    queue = ctx.Queue()
    pool = ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(queue,))
    try:
        with progress_bar(total=total, desc=desc, unit=unit, unit_scale=True, disable=not show, leave=False) as bar:
            pending = [pool.apply_async(fn, t) for t in tasks]
            while not all(r.ready() for r in pending):
                _drain(queue, bar, timeout=0.2)
                for r in pending:
                    if r.ready() and not r.successful():
                        r.get()  # raises the worker's error now; `finally` stops the other workers
            results = [r.get() for r in pending]
        pool.close()
        return results
    finally:
        pool.terminate()
        pool.join()


def _drain(queue: Any, bar: Any, timeout: float) -> None:
    import queue as queue_mod

    try:
        bar.update(queue.get(timeout=timeout))
        while True:
            bar.update(queue.get_nowait())
    except queue_mod.Empty:
        pass


def default_workers(tasks: int, bytes_per_worker: int) -> int:
    """min(cores, tasks, available memory / bytes_per_worker), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil

        by_memory = int(psutil.virtual_memory().available // max(1, bytes_per_worker))
    except ImportError:
        by_memory = cores
    return max(1, min(cores, tasks, by_memory))


def _workers(job: _Job, tasks: int, bytes_per_worker: int) -> int:
    if job.options.workers is not None:
        return max(1, min(job.options.workers, tasks))
    return default_workers(tasks, bytes_per_worker)


# ----------------------------------------------------------------------------------------------------------------
# Stage 1: scan


def _scan_marker(job: _Job, k: int) -> Path:
    return job.work / "scan" / f"day_{k}.json"


def _stage_scan(job: _Job, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per-day first-appearance lists of hashed values; returns per day {rows, bad_rows, bad_examples, ...}."""
    todo = [k for k in range(job.num_days)
            if _valid_marker(_scan_marker(job, k), "source", _day_source(job, k)) is None]
    log(f"scan: {len(todo)} of {job.num_days} days to parse ({job.num_days - len(todo)} already scanned)")
    per_worker = 30 * job.options.max_ind_range + (512 << 20)
    total = sum(os.stat(job.days[k]).st_size for k in todo)
    _run_tasks(_scan_day, [(job, k) for k in todo], _workers(job, len(todo), per_worker), total,
               "scan days", "B", job.options.progress)
    scans = [json.loads(_scan_marker(job, k).read_text()) for k in range(job.num_days)]
    for path, scan in zip(job.days, scans):
        if scan["rows"] == 0:  # every row malformed and skipped (an empty file is refused by day_files)
            raise DataError(f"{path}: no valid rows ({scan['bad_rows']:,} malformed rows skipped); an empty day "
                            f"cannot be real Criteo data")
    return scans


def _scan_day(job: _Job, k: int) -> None:
    """Parse day k; save per feature the hashed values (int32) in order of first appearance within the day."""
    path = job.days[k]
    r = job.options.max_ind_range
    reader = DayReader(path, r, chunk_bytes=job.options.chunk_bytes, skip_bad_rows=job.options.skip_bad_rows)
    seen = np.zeros(NUM_SPARSE * r, dtype=bool)  # calloc: pages are only mapped once touched
    offsets = np.arange(NUM_SPARSE, dtype=np.int64) * r
    firsts: list[list[np.ndarray]] = [[] for _ in range(NUM_SPARSE)]
    for chunk in reader:
        keys = (chunk.sparse + offsets).ravel()  # row-major: position = row * 26 + feature
        fresh = np.flatnonzero(~seen[keys])
        if fresh.size:
            _, first = np.unique(keys[fresh], return_index=True)
            new_keys = keys[np.sort(fresh[first])]  # each new value once, in order of appearance
            seen[new_keys] = True
            _append_by_feature(firsts, new_keys, r)
        _report(chunk.nbytes)
    del seen
    arrays = {f"f{j}": np.concatenate(parts) if parts else np.zeros(0, np.int32) for j, parts in enumerate(firsts)}
    with atomic_path(job.work / "scan" / f"day_{k}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    stats = reader.stats
    save_json(_scan_marker(job, k), {"source": _day_source(job, k), "rows": stats.rows, "lines": stats.lines,
                                     "bytes": stats.bytes, "bad_rows": stats.bad_rows,
                                     "bad_examples": stats.bad_examples})


def _append_by_feature(firsts: list[list[np.ndarray]], keys: np.ndarray, r: int) -> None:
    """Split keys (feature * r + value, int64 [m]) by feature, keeping their order; append int32 values."""
    feature, value = np.divmod(keys, r)
    order = np.argsort(feature, kind="stable")
    bounds = np.searchsorted(feature[order], np.arange(NUM_SPARSE + 1))
    value = value[order].astype(np.int32)
    for j in range(NUM_SPARSE):
        if bounds[j + 1] > bounds[j]:
            firsts[j].append(value[bounds[j]:bounds[j + 1]])


# ----------------------------------------------------------------------------------------------------------------
# Stage 2: merge the per-day lists into dictionaries and lookup tables


def _stage_merge(job: _Job, log: Callable[[str], None]) -> tuple[int, ...]:
    """Dictionaries in first-appearance order over all days; returns the 26 cardinalities."""
    marker = job.work / "merge.json"
    sources = [_day_source(job, k) for k in range(job.num_days)]
    done = _valid_marker(marker, "sources", sources)
    if done is not None:
        log("merge: dictionaries already built")
        return tuple(done["cardinalities"])
    log(f"merge: building {NUM_SPARSE} dictionaries")
    per_worker = 13 * job.options.max_ind_range + (256 << 20)
    results = _run_tasks(_merge_feature, [(job, j) for j in range(NUM_SPARSE)],
                         _workers(job, NUM_SPARSE, per_worker), NUM_SPARSE, "build dictionaries", "feature",
                         job.options.progress)
    cards = tuple(int(c) for c, _ in results)
    save_json(marker, {"sources": sources, "cardinalities": list(cards), "digests": [d for _, d in results]})
    return cards


def _merge_feature(job: _Job, j: int) -> tuple[int, str]:
    """Feature j's dictionary int32 [card] and its lookup table; returns (card, digest of the .npy)."""
    seen = np.zeros(job.options.max_ind_range, dtype=bool)
    parts = []
    for k in range(job.num_days):
        with np.load(job.work / "scan" / f"day_{k}.npz") as z:
            values = z[f"f{j}"]
        new = values[~seen[values]]
        seen[new] = True
        parts.append(new)
    del seen
    dictionary = np.concatenate(parts).astype(np.int32)
    digest = _save_npy(job.output / "dictionaries" / f"feature_{j}.npy", dictionary)
    _save_lookup(job.work / "lookup", j, dictionary)
    _report(1)
    return int(dictionary.size), digest


def _save_lookup(directory: Path, j: int, dictionary: np.ndarray) -> None:
    """Dense table int32 [max + 1] (id or -1) when small enough, else an open-addressing hash table."""
    for stale in (f"dense_{j}.npy", f"hash_keys_{j}.npy", f"hash_ids_{j}.npy"):
        with contextlib.suppress(FileNotFoundError):
            (directory / stale).unlink()
    size = int(dictionary.max()) + 1 if dictionary.size else 1
    if size * 4 <= DENSE_LOOKUP_MAX_BYTES or size <= 64 * dictionary.size:
        dense = np.full(size, -1, dtype=np.int32)
        dense[dictionary] = np.arange(dictionary.size, dtype=np.int32)
        _save_npy(directory / f"dense_{j}.npy", dense)
    else:
        index = HashIndex.build(dictionary)
        _save_npy(directory / f"hash_keys_{j}.npy", index.keys)
        _save_npy(directory / f"hash_ids_{j}.npy", index.ids)


class HashIndex:
    """Open-addressing hash table (linear probing, load <= 1/4) from non-negative int32 values to int32 ids,
    built and queried with vectorised numpy rounds (one round per probe step; ~1.5 on average).

    keys int32 [P] (-1 = empty), ids int32 [P]; P is a power of two >= 4 * len(values) (short probe runs keep the
    number of vectorised rounds small).
    """

    _MULT = np.uint32(0x9E3779B1)  # Fibonacci hashing

    def __init__(self, keys: np.ndarray, ids: np.ndarray) -> None:
        self.keys, self.ids = keys, ids
        self.bits = int(keys.size).bit_length() - 1
        self.mask = keys.size - 1

    def _slot(self, values: np.ndarray) -> np.ndarray:
        h = values.astype(np.uint32) * self._MULT
        return (h >> np.uint32(32 - self.bits)).astype(np.int64) if self.bits else np.zeros(values.size, np.int64)

    @classmethod
    def build(cls, values: np.ndarray) -> "HashIndex":
        """Index of distinct values int32 [n]: value i gets id i."""
        size = 1 << max(1, int(4 * max(1, values.size) - 1).bit_length())
        index = cls(np.full(size, -1, dtype=np.int32), np.full(size, -1, dtype=np.int32))
        pending = np.arange(values.size)
        slot = index._slot(values)
        while pending.size:
            free = np.flatnonzero(index.keys[slot] == -1)
            _, first = np.unique(slot[free], return_index=True)  # one winner per free slot
            won = free[first]
            index.keys[slot[won]] = values[pending[won]]
            index.ids[slot[won]] = pending[won]
            lost = np.ones(pending.size, dtype=bool)
            lost[won] = False
            pending, slot = pending[lost], (slot[lost] + 1) & index.mask
        return index

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """ids int32 [n] of values int32 [n]; -1 for values not in the index."""
        slot = self._slot(values)
        key = self.keys.take(slot)
        hit = key == values
        out = np.where(hit, self.ids.take(slot), np.int32(-1))
        todo = np.flatnonzero(~hit & (key != -1))  # collided on the first probe: keep probing
        slot = slot[todo]
        while todo.size:
            slot += 1
            slot &= self.mask
            key = self.keys.take(slot)
            hit = key == values[todo]
            out[todo[hit]] = self.ids.take(slot[hit])
            more = ~hit & (key != -1)
            todo, slot = todo[more], slot[more]
        return out


def _mapped(path: Path) -> np.ndarray:
    """A memory-mapped .npy as a plain ndarray view (np.memmap's subclass hooks cost more than small gathers)."""
    return np.asarray(np.load(path, mmap_mode="r"))


class _Remapper:
    """Hashed values int32 [n, 26] -> ids int32 [n, 26] through the lookup tables (memory-mapped)."""

    def __init__(self, directory: Path) -> None:
        self.tables: list[np.ndarray | HashIndex] = []
        for j in range(NUM_SPARSE):
            dense = directory / f"dense_{j}.npy"
            if dense.exists():
                self.tables.append(_mapped(dense))
            else:
                self.tables.append(HashIndex(_mapped(directory / f"hash_keys_{j}.npy"),
                                             _mapped(directory / f"hash_ids_{j}.npy")))

    def __call__(self, hashed: np.ndarray, where: str) -> np.ndarray:
        ids = np.empty_like(hashed)
        for j, table in enumerate(self.tables):
            col = np.ascontiguousarray(hashed[:, j])
            if isinstance(table, HashIndex):
                found = table.lookup(col)
            else:
                found = table.take(np.minimum(col, table.size - 1))
                found[col >= table.size] = -1
            if found.size and found.min() < 0:
                raise DataError(f"{where}: feature C{j + 1} has a value that the scan did not see; the file "
                                f"changed while preprocessing: run again")
            ids[:, j] = found
        return ids


# ----------------------------------------------------------------------------------------------------------------
# Stage 3: write the splits


def _write_marker(job: _Job, k: int) -> Path:
    return job.work / "write" / f"day_{k}.json"


def split_sizes(last_day_rows: int, calibration_rows: int = CALIBRATION_ROWS) -> tuple[int, int]:
    """(test rows, calibration rows) of a last day of N rows: ceil(N / 2) and min(calibration_rows, rest)."""
    test = math.ceil(last_day_rows / 2)
    return test, min(calibration_rows, last_day_rows - test)


def _stage_write(job: _Job, scans: list[dict[str, Any]], log: Callable[[str], None]) -> list[dict[str, Any]]:
    last_rows = scans[-1]["rows"]
    if last_rows == 0:
        raise DataError(f"{job.days[-1]}: the last day has no rows, so there is no test set")
    todo = [k for k in range(job.num_days)
            if _valid_marker(_write_marker(job, k), "inputs", _write_inputs(job, k)) is None]
    log(f"write: {len(todo)} of {job.num_days} days to write ({job.num_days - len(todo)} already written)")
    per_worker = 4 * sum(job.cardinalities) + (256 << 20)
    total = sum(os.stat(job.days[k]).st_size for k in todo)
    _run_tasks(_write_day, [(job, k, scans[k]["rows"]) for k in todo], _workers(job, len(todo), per_worker),
               total, "write days", "B", job.options.progress)
    return [json.loads(_write_marker(job, k).read_text()) for k in range(job.num_days)]


def _write_inputs(job: _Job, k: int) -> list[Any]:
    """What day k's outputs depend on: its scan inputs, the dictionaries, and (last day) the split sizes."""
    merge = json.loads((job.work / "merge.json").read_text())
    dictionaries = hashlib.blake2b("".join(merge["digests"]).encode(), digest_size=16).hexdigest()
    return [_day_source(job, k), dictionaries, job.options.calibration_rows if job.is_last(k) else None]


def _write_day(job: _Job, k: int, rows: int) -> None:
    """Parse day k again and write its arrays: a training day, or the test and calibration splits."""
    remap = _Remapper(job.work / "lookup")
    if job.is_last(k):
        test, calib = split_sizes(rows, job.options.calibration_rows)
        targets = [("test", 0, test, EVAL_ARRAYS), ("calibration", test, test + calib, EVAL_ARRAYS)]
        counter = None
    else:
        targets = [(f"days/day_{k}", 0, rows, TRAIN_ARRAYS)]
        counter = FrequencyCounter(job.cardinalities, dtype=np.int32)
    reader = DayReader(job.days[k], job.options.max_ind_range, chunk_bytes=job.options.chunk_bytes,
                       skip_bad_rows=job.options.skip_bad_rows, max_rows=max(t[2] for t in targets))
    digests: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        writers = {rel: _SplitWriter(job.output / rel, hi - lo, names, stack) for rel, lo, hi, names in targets}
        row = 0
        for chunk in reader:
            ids = remap(chunk.sparse, f"{job.days[k]} (near line {chunk.first_line})")
            if counter is not None:
                counter.add(ids)
            for rel, lo, hi, _ in targets:
                a, b = max(lo, row), min(hi, row + len(chunk))
                if a < b:
                    writers[rel].write(_slice(chunk, a - row, b - row), ids[a - row:b - row])
            row += len(chunk)
            _report(chunk.nbytes)
        if row != max(t[2] for t in targets):
            raise DataError(f"{job.days[k]}: {row} rows now, {rows} when scanned; the file changed: run again")
        for rel, w in writers.items():
            digests.update({f"{rel}/{name}": d for name, d in w.close().items()})
    if counter is not None:
        with atomic_path(job.work / "freq" / f"day_{k}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **{f"t{j}": c for j, c in enumerate(counter.counts)})
    save_json(_write_marker(job, k), {"inputs": _write_inputs(job, k), "rows": rows, "files": digests})


def _slice(chunk: RawChunk, a: int, b: int) -> RawChunk:
    return RawChunk(chunk.labels[a:b], chunk.counts[a:b], chunk.sparse[a:b], chunk.first_line, 0)


def quantize_numeric_int8(numeric: np.ndarray) -> np.ndarray:
    """numeric_fp32 [n, 13] -> int8 [n, 13]: trunc(x * 127 / 14.2313) in float64, clipped to [-128, 127]."""
    scaled = np.trunc(numeric.astype(np.float64) * 127.0 / INT8_NUMERIC_MAX)
    return np.clip(scaled, -128, 127).astype(np.int8)


def split_arrays(chunk: RawChunk, ids: np.ndarray, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The arrays of a split for one block of rows: name -> array (dtypes and shapes per docs/FORMATS.md)."""
    out: dict[str, np.ndarray] = {}
    n = len(chunk)
    for name in names:
        if name == "ground_truth.npy":
            out[name] = chunk.labels.astype(np.float32)
        elif name == "numeric_fp32.npy":
            out[name] = chunk.numeric
        elif name == "categorical_int32.npy":
            out[name] = ids
        elif name == "numeric_fp16.npy":
            out[name] = chunk.numeric.astype(np.float16)
        elif name == "numeric_int8_linear.npy":
            out[name] = quantize_numeric_int8(chunk.numeric)
        elif name == "numeric_int8_chw4.npy":
            padded = np.zeros((n, 16), dtype=np.int8)
            padded[:, :NUM_DENSE] = out.get("numeric_int8_linear.npy", quantize_numeric_int8(chunk.numeric))
            out[name] = padded
        elif name == "data.bin":
            out[name] = np.concatenate([chunk.labels[:, None].astype(np.int32), chunk.counts, ids], axis=1)
        else:
            raise ValueError(name)
    return out


_SPLIT_SHAPES: dict[str, tuple[np.dtype, int | None]] = {
    "ground_truth.npy": (np.dtype(np.float32), None),
    "numeric_fp32.npy": (np.dtype(np.float32), NUM_DENSE),
    "categorical_int32.npy": (np.dtype(np.int32), NUM_SPARSE),
    "numeric_fp16.npy": (np.dtype(np.float16), NUM_DENSE),
    "numeric_int8_linear.npy": (np.dtype(np.int8), NUM_DENSE),
    "numeric_int8_chw4.npy": (np.dtype(np.int8), 16),
    "data.bin": (np.dtype("<i4"), NUM_FIELDS),
    COMPRESSED: (np.dtype(np.int32), 16),
}


class ArrayStream:
    """Write an array of known shape [rows, cols] block by block to an open file: an .npy (header first) or,
    for names ending in .bin, raw little-endian rows. Keeps a blake2b digest of every byte written."""

    def __init__(self, f: io.BufferedWriter, name: str, rows: int, dtype: np.dtype, cols: int | None) -> None:
        self.f, self.name, self.rows, self.dtype, self.cols = f, name, rows, dtype, cols
        self.written = 0
        self.digest = hashlib.blake2b(digest_size=16)
        if not name.endswith(".bin"):
            header = io.BytesIO()
            shape = (rows,) if cols is None else (rows, cols)
            np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                          "fortran_order": False, "shape": shape})
            self._put(header.getvalue())

    def _put(self, data: bytes | memoryview) -> None:
        self.f.write(data)
        self.digest.update(data)

    def write(self, block: np.ndarray) -> None:
        if block.dtype != self.dtype or (self.cols is not None and block.shape[1:] != (self.cols,)):
            raise ValueError(f"{self.name}: block {block.dtype} {block.shape} does not match {self.dtype}")
        if self.written + block.shape[0] > self.rows:
            raise ValueError(f"{self.name}: more than {self.rows} rows")
        self._put(memoryview(np.ascontiguousarray(block)).cast("B"))
        self.written += block.shape[0]

    def close(self) -> str:
        if self.written != self.rows:
            raise ValueError(f"{self.name}: {self.written} rows written, {self.rows} expected")
        self.f.close()
        return self.digest.hexdigest()


class _SplitWriter:
    """The arrays of one split folder, each streamed to a temporary file renamed when the ExitStack closes."""

    def __init__(self, directory: Path, rows: int, names: Sequence[str], stack: contextlib.ExitStack) -> None:
        self.names = tuple(names)
        self.streams: dict[str, ArrayStream] = {}
        for name in self.names:
            tmp = stack.enter_context(atomic_path(directory / name))
            dtype, cols = _SPLIT_SHAPES[name]
            f = stack.enter_context(open(tmp, "wb"))
            self.streams[name] = ArrayStream(f, name, rows, dtype, cols)

    def write(self, chunk: RawChunk, ids: np.ndarray) -> None:
        for name, array in split_arrays(chunk, ids, self.names).items():
            self.streams[name].write(array)

    def close(self) -> dict[str, str]:
        return {name: s.close() for name, s in self.streams.items()}


def _save_npy(path: Path, array: np.ndarray) -> str:
    """Atomically save an array as .npy; returns the digest of the file's bytes."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        stream = ArrayStream(f, path.name, array.shape[0], array.dtype, array.shape[1] if array.ndim == 2 else None)
        stream.write(array)
        return stream.close()


# ----------------------------------------------------------------------------------------------------------------
# Stage 4: frequencies, partition, compressed inputs, meta.json


def _stage_finish(job: _Job, name: str, raw_dir: Path, signature: dict[str, Any], scans: list[dict[str, Any]],
                  writes: list[dict[str, Any]], log: Callable[[str], None]) -> dict[str, Any]:
    files: dict[str, str] = {}
    merge = json.loads((job.work / "merge.json").read_text())
    files.update({f"dictionaries/feature_{j}.npy": d for j, d in enumerate(merge["digests"])})
    for w in writes:
        files.update(w["files"])
    files["row_frequencies.bin"] = _write_frequencies(job)
    _remove_stale_days(job)
    test_rows, calib_rows = split_sizes(scans[-1]["rows"], job.options.calibration_rows)
    meta = {
        "format": FORMAT_VERSION, "name": name, "source_dir": str(Path(raw_dir).resolve()),
        "max_ind_range": job.options.max_ind_range, "num_days": job.num_days,
        "cardinalities": list(job.cardinalities), "test_rows": test_rows, "calibration_rows": calib_rows,
        "train_rows": int(sum(s["rows"] for s in scans[:-1])),
        "bad_rows": int(sum(s["bad_rows"] for s in scans)),
        "bad_row_examples": [e for s in scans for e in s["bad_examples"]][:10],
        "days": [{"file": job.days[k].name, "rows": s["rows"], "bad_rows": s["bad_rows"]}
                 for k, s in enumerate(scans)],
        "compressed": False, "source": signature, "files": files,
    }
    meta = _finish_extras(job, meta, log)
    _discard_work(job)
    return meta


def _discard_work(job: _Job) -> None:
    """Delete the work folder: rename it to TRASH_DIR (atomic), then delete that."""
    trash = job.output / TRASH_DIR
    shutil.rmtree(trash, ignore_errors=True)
    if job.work.exists():
        os.replace(job.work, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _write_frequencies(job: _Job) -> str:
    """row_frequencies.bin: per table, lookups of each row summed over the training days (float32)."""
    counts = []
    for j, card in enumerate(job.cardinalities):
        total = np.zeros(card, dtype=np.int64)
        for k in range(job.num_days - 1):
            with np.load(job.work / "freq" / f"day_{k}.npz") as z:
                total += z[f"t{j}"]
        counts.append(total.astype(np.float32))
    return write_row_frequencies(job.output / "row_frequencies.bin", counts)


def _remove_stale_days(job: _Job) -> None:
    """Remove days/day_k folders left by an earlier run over more days."""
    days_dir = job.output / "days"
    if not days_dir.is_dir():
        return
    for entry in days_dir.iterdir():
        if entry.name.startswith("day_") and entry.name[4:].isdigit() and int(entry.name[4:]) >= job.num_days - 1:
            shutil.rmtree(entry)


def _finish_extras(job: _Job, meta: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Aggregation trace of the test set and (when asked) compressed inputs; then meta.json with its
    fingerprint. Cheap, so it also runs on an up-to-date dataset (e.g. to add --compress later)."""
    files = dict(meta["files"])
    files.update(_write_partition(job, int(meta["test_rows"])))
    if job.options.compress or meta.get("compressed"):
        for split in ("test", "calibration"):
            rel = f"{split}/{COMPRESSED}"
            if rel not in files or not (job.output / rel).exists():
                files[rel] = _write_compressed(job.output / split, meta["cardinalities"])
        meta["compressed"] = True
    meta["files"] = dict(sorted(files.items()))
    meta["fingerprint"] = fingerprint(meta)
    old = job.output / "meta.json"
    if not old.exists() or json.loads(old.read_text()) != meta:
        save_json(old, meta)
    return meta


def fingerprint(meta: dict[str, Any]) -> str:
    """A digest of every output file's bytes and the content options: it changes whenever the content does."""
    basis = {"files": meta["files"], "max_ind_range": meta["max_ind_range"],
             "cardinalities": meta["cardinalities"], "format": meta["format"]}
    return hashlib.blake2b(json.dumps(basis, sort_keys=True).encode(), digest_size=16).hexdigest()


def _write_partition(job: _Job, test_rows: int) -> dict[str, str]:
    """test/sample_partition.npy and the text trace (criteo/partition.py); returns their digests."""
    from dlrm_bench.criteo.partition import write_partition

    test_dir = job.output / "test"
    write_partition(test_rows, test_dir, job.options.quantile_file)
    names = ("sample_partition.npy", "dlrm_trace_of_aggregated_samples.txt")
    return {f"test/{n}": _file_digest(test_dir / n) for n in names if (test_dir / n).exists()}


def _write_compressed(split_dir: Path, cardinalities: Sequence[int]) -> str:
    """categorical_int32_compressed.npy from the split's categorical_int32.npy, in blocks."""
    from dlrm_bench.criteo.packing import pack, packing_layout

    layout = packing_layout(cardinalities)
    ids = np.load(split_dir / "categorical_int32.npy", mmap_mode="r")
    with atomic_path(split_dir / COMPRESSED) as tmp, open(tmp, "wb") as f:
        stream = ArrayStream(f, COMPRESSED, ids.shape[0], np.dtype(np.int32), 16)
        for lo in range(0, ids.shape[0], 1 << 20):
            stream.write(pack(ids[lo:lo + (1 << 20)], layout))
        return stream.close()


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _print_summary(meta: dict[str, Any]) -> None:
    print(f"dataset {meta['name']}: {meta['num_days']} days, {meta['train_rows']} training rows, "
          f"{meta['test_rows']} test rows, {meta['calibration_rows']} calibration rows, "
          f"{sum(meta['cardinalities'])} embedding rows (max_ind_range {meta['max_ind_range']})")
    print(f"cardinalities: {meta['cardinalities']}")
    if meta.get("bad_rows"):
        print(f"skipped {meta['bad_rows']} malformed rows, e.g.:")
        for example in meta.get("bad_row_examples", [])[:5]:
            print(f"  {example}")
    print(f"fingerprint {meta['fingerprint']}")
