"""Shared fixtures: small preprocessed datasets written straight in the docs/FORMATS.md layout.

`write_preprocessed_dataset(root, ...)` writes meta.json, dictionaries/, days/day_k/, test/ and calibration/ (each
split: ground_truth, numeric_fp32, numeric_fp16, numeric_int8_linear, numeric_int8_chw4, categorical_int32),
test/sample_partition.npy and row_frequencies.bin. Labels come from a planted logistic model (a weight per
dense feature and a value per category id), so a model trained on the days can learn them; `signal=0` gives
pure-noise labels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

NUM_DENSE, NUM_SPARSE = 13, 26
INT8_SCALE = 127.0 / 14.2313

TINY_CARDINALITIES: tuple[int, ...] = (50, 7, 13, 3, 40, 2, 9, 31, 5, 64, 17, 11, 4, 8, 21, 6, 3, 12, 4, 57,
                                       33, 45, 10, 16, 6, 5)
"""26 small tables (the Criteo shape in miniature: some large, some tiny)."""


def _planted_model(cardinalities: Sequence[int], seed: int, signal: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Dense weights [13] and per-table id effects, the hidden truth behind the labels."""
    rng = np.random.default_rng(seed + 7919)
    dense_w = rng.normal(0.0, 0.4, NUM_DENSE) * signal
    effects = [rng.normal(0.0, 1.0, n) * signal for n in cardinalities]
    return dense_w, effects


def _zipf_ids(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """Ids in [0, n) with a power-law skew (id 0 the most frequent), int32 [rows]."""
    weights = 1.0 / np.arange(1, n + 1) ** 1.1
    return rng.choice(n, size=rows, p=weights / weights.sum()).astype(np.int32)


def make_split_arrays(rows: int, cardinalities: Sequence[int], rng: np.random.Generator,
                      planted: tuple[np.ndarray, list[np.ndarray]], bias: float = -1.0
                      ) -> dict[str, np.ndarray]:
    """labels float32 [rows], numeric float32 [rows, 13] (log1p of counts), categorical int32 [rows, 26]."""
    counts = np.floor(rng.lognormal(1.0, 1.5, (rows, NUM_DENSE)))
    counts[rng.random((rows, NUM_DENSE)) < 0.2] = 0.0  # "missing"
    numeric = np.log1p(np.maximum(counts, 0.0)).astype(np.float32)
    categorical = np.stack([_zipf_ids(rng, n, rows) for n in cardinalities], axis=1).astype(np.int32)
    dense_w, effects = planted
    logit = bias + (numeric - numeric.mean()) @ dense_w
    for k, table in enumerate(effects):
        logit = logit + table[categorical[:, k]]
    labels = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return {"ground_truth.npy": labels, "numeric_fp32.npy": numeric, "categorical_int32.npy": categorical}


def write_split(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write one split folder: the three base arrays plus the derived numeric encodings of FORMATS.md."""
    directory.mkdir(parents=True, exist_ok=True)
    numeric = arrays["numeric_fp32.npy"]
    int8 = np.trunc(numeric * INT8_SCALE).astype(np.int8)
    derived = {"numeric_fp16.npy": numeric.astype(np.float16), "numeric_int8_linear.npy": int8,
               "numeric_int8_chw4.npy": np.pad(int8, ((0, 0), (0, 3)))}
    for name, array in {**arrays, **derived}.items():
        np.save(directory / name, array)


def _write_partition(test_dir: Path, rows: int, rng: np.random.Generator, max_sample: int) -> None:
    sizes = []
    while sum(sizes) < rows:
        sizes.append(int(min(rng.integers(1, max_sample + 1), rows - sum(sizes))))
    np.save(test_dir / "sample_partition.npy", np.concatenate(([0], np.cumsum(sizes))).astype(np.int32))


def _write_row_frequencies(path: Path, cardinalities: Sequence[int], day_dirs: list[Path]) -> None:
    counts = [np.zeros(n, dtype=np.float32) for n in cardinalities]
    for day in day_dirs:
        ids = np.load(day / "categorical_int32.npy")
        for k, n in enumerate(cardinalities):
            counts[k] += np.bincount(ids[:, k], minlength=n).astype(np.float32)
    with open(path, "wb") as f:
        f.write(np.int32(len(cardinalities)).tobytes())
        for table in counts:
            f.write(np.int32(table.shape[0]).tobytes())
            f.write(table.tobytes())


def save_random_model(path: Path, cardinalities: Sequence[int] = TINY_CARDINALITIES, seed: int = 0) -> Path:
    """A reference-initialised DLRM (full-size MLPs, tables of `cardinalities`) saved as a checkpoint at `path`."""
    import torch

    from dlrm_bench.model.checkpoint import save_checkpoint
    from dlrm_bench.model.dlrm import DLRM, init_reference

    model = DLRM(list(cardinalities))
    init_reference(model, torch.Generator().manual_seed(seed))
    return save_checkpoint(path, model.state_dict())


def write_preprocessed_dataset(root: Path, *, cardinalities: Sequence[int] = TINY_CARDINALITIES,
                               num_days: int = 2, rows_per_day: int = 2000, test_rows: int = 1000,
                               calibration_rows: int = 200, seed: int = 0, signal: float = 1.0,
                               name: str = "fixture", max_sample: int = 20) -> Path:
    """A complete preprocessed dataset folder at `root` (FORMATS.md layout); returns `root`.

    num_days training days of rows_per_day pairs, then the test and calibration splits of the "last day".
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    planted = _planted_model(cardinalities, seed, signal)
    day_dirs = [root / "days" / f"day_{k}" for k in range(num_days)]
    for day in day_dirs:
        write_split(day, make_split_arrays(rows_per_day, cardinalities, rng, planted))
    write_split(root / "test", make_split_arrays(test_rows, cardinalities, rng, planted))
    write_split(root / "calibration", make_split_arrays(calibration_rows, cardinalities, rng, planted))
    _write_partition(root / "test", test_rows, rng, max_sample)
    _write_row_frequencies(root / "row_frequencies.bin", cardinalities, day_dirs)
    (root / "dictionaries").mkdir(exist_ok=True)
    for j, n in enumerate(cardinalities):
        np.save(root / "dictionaries" / f"feature_{j}.npy", rng.permutation(10 * n)[:n].astype(np.int32))
    fingerprint = hashlib.sha256(json.dumps([name, seed, list(cardinalities), num_days, rows_per_day, test_rows,
                                             calibration_rows, signal]).encode()).hexdigest()[:16]
    meta = {"format": 1, "name": name, "source_dir": "", "max_ind_range": 40_000_000, "num_days": num_days + 1,
            "cardinalities": [int(c) for c in cardinalities], "test_rows": test_rows,
            "calibration_rows": calibration_rows, "train_rows": num_days * rows_per_day,
            "fingerprint": fingerprint}
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


def make_workspace(root: Path, *, test_rows: int = 3000, rows_per_day: int = 300, max_sample: int = 40,
                   model_seed: int = 0, **dataset_kwargs: object) -> dict[str, Path]:
    """A one-day fixture dataset and a random model under `root`: {"root", "data", "model", "logs"}; the
    dataset keywords as write_preprocessed_dataset."""
    data = write_preprocessed_dataset(root / "data", test_rows=test_rows, num_days=1, rows_per_day=rows_per_day,
                                      max_sample=max_sample, **dataset_kwargs)
    return {"root": root, "data": data, "model": save_random_model(root / "model.pt", seed=model_seed),
            "logs": root / "logs"}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small dataset with a learnable planted signal (read-only: do not modify it in tests)."""
    return write_preprocessed_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture
def make_dataset(tmp_path: Path):
    """Factory: make_dataset(**kwargs) -> a fresh dataset folder under tmp_path (kwargs as write_preprocessed_dataset)."""
    counter = iter(range(1_000_000))

    def _make(**kwargs) -> Path:
        return write_preprocessed_dataset(tmp_path / f"dataset_{next(counter)}", **kwargs)

    return _make
