"""Reading a preprocessed dataset (docs/FORMATS.md): meta.json and memory-mapped splits, checked on open."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrm_bench.criteo.schema import NUM_DENSE, NUM_SPARSE
from dlrm_bench.errors import DataError, UserError

@dataclass(frozen=True)
class DatasetMeta:
    """meta.json of a preprocessed dataset."""

    name: str
    directory: Path
    cardinalities: tuple[int, ...]
    max_ind_range: int
    fingerprint: str
    test_rows: int
    calibration_rows: int
    raw: dict

    @property
    def total_rows(self) -> int:
        return int(sum(self.cardinalities))


@dataclass(frozen=True)
class Split:
    """One split (test, calibration or a training day) as memory-mapped arrays; nothing is copied on open.

    labels: float32 [N]; numeric: float32 [N, 13] (log1p'd); categorical: int32 [N, 26] (contiguous ids).
    """

    directory: Path
    labels: np.ndarray
    numeric: np.ndarray
    categorical: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def optional(self, filename: str) -> np.ndarray | None:
        """Open another array of this split (e.g. numeric_int8_linear.npy) if present, memory-mapped."""
        path = self.directory / filename
        return open_npy(path) if path.exists() else None


def open_npy(path: Path, dtype: np.dtype | None = None, columns: int | None = None,
             rows: int | None = None) -> np.ndarray:
    """Memory-map an .npy file, turning a truncated or mistyped file into a DataError that names it."""
    if not path.exists():
        raise DataError(f"{path}: file not found (run `make preprocess_data` to create it)")
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc}); it may be truncated: "
                        f"delete it and run `make preprocess_data` again") from None
    if dtype is not None and array.dtype != dtype:
        raise DataError(f"{path}: expected dtype {dtype}, found {array.dtype}")
    if columns is None and dtype is not None and array.ndim != 1:
        raise DataError(f"{path}: expected a 1-D array, found shape {array.shape}")
    if columns is not None and (array.ndim != 2 or array.shape[1] != columns):
        raise DataError(f"{path}: expected shape [N, {columns}], found {array.shape}")
    if rows is not None and array.shape[0] != rows:
        raise DataError(f"{path}: expected {rows} rows, found {array.shape[0]}")
    return array


def open_split(directory: Path) -> Split:
    """Open `directory` (e.g. <dataset>/test) and check that its arrays agree in length."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: split folder not found (run `make preprocess_data`)")
    labels = open_npy(directory / "ground_truth.npy", np.dtype(np.float32))
    n = labels.shape[0]
    numeric = open_npy(directory / "numeric_fp32.npy", np.dtype(np.float32), NUM_DENSE, n)
    categorical = open_npy(directory / "categorical_int32.npy", np.dtype(np.int32), NUM_SPARSE, n)
    return Split(directory, labels, numeric, categorical)


def load_meta(directory: Path) -> DatasetMeta:
    """Read and check `<directory>/meta.json`."""
    directory = Path(directory)
    path = directory / "meta.json"
    if not path.exists():
        raise UserError(f"{directory}: no preprocessed dataset here (meta.json missing); "
                        f"run `make preprocess_data` or `make run` to build the synthetic one")
    try:
        raw = json.loads(path.read_text())
        cards = tuple(int(c) for c in raw["cardinalities"])
        if len(cards) != NUM_SPARSE or min(cards) < 1:
            raise ValueError(f"cardinalities must be {NUM_SPARSE} positive ints")
        return DatasetMeta(
            name=str(raw["name"]), directory=directory, cardinalities=cards,
            max_ind_range=int(raw.get("max_ind_range", 0)), fingerprint=str(raw["fingerprint"]),
            test_rows=int(raw["test_rows"]), calibration_rows=int(raw.get("calibration_rows", 0)), raw=raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: malformed meta.json ({exc})") from None


def open_partition(directory: Path, num_pairs: int) -> np.ndarray:
    """Open `sample_partition.npy` (int32 [S + 1] offsets) and check it covers exactly `num_pairs` pairs."""
    path = Path(directory) / "sample_partition.npy"
    part = open_npy(path, np.dtype(np.int32))
    if part.shape[0] < 2 or part[0] != 0 or int(part[-1]) != num_pairs:
        raise DataError(f"{path}: expected offsets from 0 to {num_pairs}, found {part.shape[0]} entries ending "
                        f"at {int(part[-1]) if part.size else 'nothing'}")
    if np.any(np.diff(part) <= 0):
        raise DataError(f"{path}: offsets must be strictly increasing")
    return part
