"""The `criteo-tb-random` preset: full-scale inputs for performance work, without the real data or model.

Dataset (a preprocessed folder, docs/FORMATS.md): a synthetic test split of 89,137,319 pairs (and a 128,000-row
calibration split) written straight to the npy files, the 330,067-sample aggregation trace, `row_frequencies.bin`
and meta.json with Criteo Terabyte's 26 cardinalities. Each table is read with a skewed power law: rank k is drawn
with P(k) ~ (k + 1)^-a (a = 1.1 by default: the top 1% of a 40M-row table takes ~88% of its lookups) and mapped
to a row by a per-table affine bijection row = (m * k + s) mod R, so hot rows are scattered over the table as in
the real data. `row_frequencies.bin` holds the expected lookups of each row over Criteo's 23 training days
(4,195,197,692 pairs x P(row)), so the hot/cold store sorts rows in the true order of popularity. Counts follow
the synthetic days' per-field distributions (missing -> 0, log1p); labels are Bernoulli(3.3%).

Model (a folder that the int8 engines read directly): `dlrm_embedding_weights_int8_v3.bin` with uniformly random
int8 rows in [-127, 127] and scale sqrt(1/R)/127.5 per table -- the int8 image of the reference's
uniform(-sqrt(1/R), sqrt(1/R)) table init, never materialised in fp32 -- plus the MLP weights
`model_test_without_embedding_weights_v3.pt` (reference init) and `source.json`.

Everything is streamed in fixed-size chunks (bounded memory) and generated with torch on the GPU when there is
one. Each chunk has its own generator seeded from (seed, what, chunk), so the files are a function of the seed,
the chunk size and the device kind: torch's CPU and CUDA generators are different algorithms, so a CPU run and a
GPU run give statistically equal but different data (meta.json records the device kind, and the fingerprint
covers it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import struct
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np
import torch

from dlrm_bench import paths
from dlrm_bench.atomic import atomic_path, save_json
from dlrm_bench.criteo import partition, synthetic
from dlrm_bench.criteo.preprocess import quantize_numeric_int8
from dlrm_bench.criteo.schema import (CALIBRATION_ROWS, CRITEO_TB_CARDINALITIES, CRITEO_TB_TEST_PAIRS,
                                      DEFAULT_MAX_IND_RANGE, EMBEDDING_DIM, NUM_DAYS, NUM_DENSE, NUM_SPARSE)
from dlrm_bench.errors import UserError
from dlrm_bench.progress import progress_bar
from dlrm_bench.quant.artifacts import SOURCE_FILE
from dlrm_bench.quant.tables import MLP_FILE, TABLES_FILE, write_tables

PRESET_NAME = "criteo-tb-random"
GENERATOR = "dlrm_bench.random_preset/1"
DATA_CHUNK_ROWS = 1 << 21
"""Pairs per generated chunk (~300 MB of arrays on the device)."""
TABLE_CHUNK_ROWS = 1 << 20
"""Embedding rows per generated chunk (128 MiB of int8)."""
DEFAULT_EXPONENT = 1.1
CLICK_RATE = 0.033
TRAINING_PAIRS = 4_195_197_692
"""Pairs in Criteo Terabyte's training days (day_0 .. day_22): the scale of the expected lookup counts."""
FREQUENCIES_FILE = "row_frequencies.bin"
INT8_CHW4_COLUMNS = 16

_KEY_TEST, _KEY_CALIBRATION, _KEY_TABLE, _KEY_MLP, _KEY_LAW = 1, 2, 3, 4, 5


def pick_device(device: str | None = None) -> torch.device:
    """`device`, or CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    return dev


def _seed(seed: int, *key: int) -> int:
    """A 63-bit seed for (seed, key...), independent across keys."""
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def _generator(device: torch.device, seed: int, *key: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_seed(seed, *key))


@dataclass(frozen=True)
class AccessLaw:
    """How one table is read: rank k ~ P(k) = F(k + 1) - F(k), F(x) = (1 - (x + 1)^(1 - a)) / (1 - (R + 1)^(1 - a)),
    then row = (multiplier * k + offset) mod R (a bijection: gcd(multiplier, R) = 1)."""

    rows: int
    exponent: float
    multiplier: int
    offset: int

    def sample(self, u: torch.Tensor) -> torch.Tensor:
        """Uniforms float64 [n] in [0, 1) -> row ids int64 [n]."""
        e = 1.0 - self.exponent
        top = 1.0 - (self.rows + 1.0) ** e
        ranks = torch.floor(torch.pow(1.0 - u * top, 1.0 / e) - 1.0).to(torch.int64)
        return self.rank_to_row(ranks.clamp_(0, self.rows - 1))

    def rank_to_row(self, ranks: torch.Tensor) -> torch.Tensor:
        """int64 [n] -> int64 [n]."""
        return (ranks * self.multiplier + self.offset) % self.rows

    def probability(self, ranks: torch.Tensor) -> torch.Tensor:
        """P(rank) float64 [n] for ranks int64 [n], computed without cancellation."""
        e = 1.0 - self.exponent
        k1 = ranks.to(torch.float64) + 1.0
        # (k+1)^e - (k+2)^e = -(k+1)^e * expm1(e * log1p(1 / (k+1)))
        mass = -torch.pow(k1, e) * torch.expm1(e * torch.log1p(1.0 / k1))
        return mass / (1.0 - (self.rows + 1.0) ** e)


def access_laws(cardinalities: Sequence[int], exponents: float | Sequence[float], seed: int) -> list[AccessLaw]:
    """One AccessLaw per table, its permutation drawn from `seed`."""
    if isinstance(exponents, (int, float)):
        exponents = [float(exponents)] * len(cardinalities)
    if len(exponents) != len(cardinalities) or any(a <= 1.0 for a in exponents):
        raise UserError(f"need one power-law exponent > 1 per table, got {list(exponents)}")
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_KEY_LAW,)))
    laws = []
    for rows, a in zip(cardinalities, exponents):
        rows = int(rows)
        multiplier = int(rng.integers(rows // 3, 2 * rows // 3 + 1)) | 1 if rows > 2 else 1
        while math.gcd(multiplier, rows) != 1:
            multiplier += 2
        laws.append(AccessLaw(rows, float(a), multiplier % rows if rows > 1 else 0, int(rng.integers(0, rows))))
    return laws


class NpyStream:
    """An .npy file written front to back: the header for the final shape, then chunks [n, *tail] in order.

    Written under a temporary name (the caller's ExitStack renames it when everything succeeded).
    """

    def __init__(self, stack: ExitStack, final: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.path = final
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.written = 0
        tmp = stack.enter_context(atomic_path(final))
        self.handle: BinaryIO = stack.enter_context(open(tmp, "wb"))
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.handle, header)

    def append(self, chunk: np.ndarray) -> None:
        if chunk.dtype != self.dtype or chunk.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path.name}: chunk {chunk.dtype} {chunk.shape} does not fit {self.dtype} "
                             f"{self.shape}")
        self.handle.write(np.ascontiguousarray(chunk).data)
        self.written += chunk.shape[0]

    def check(self) -> None:
        if self.written != self.shape[0]:
            raise RuntimeError(f"{self.path.name}: wrote {self.written} rows, expected {self.shape[0]}")


def split_arrays(numeric: np.ndarray, categorical: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The npy arrays of a split for one chunk: numeric float32 [n, 13], categorical int32 [n, 26], labels [n]."""
    int8 = quantize_numeric_int8(numeric)
    chw4 = np.zeros((numeric.shape[0], INT8_CHW4_COLUMNS), dtype=np.int8)
    chw4[:, :NUM_DENSE] = int8
    return {
        "ground_truth.npy": labels.astype(np.float32),
        "numeric_fp32.npy": numeric,
        "numeric_fp16.npy": numeric.astype(np.float16),
        "numeric_int8_linear.npy": int8,
        "numeric_int8_chw4.npy": chw4,
        "categorical_int32.npy": categorical,
    }


_SPLIT_LAYOUT: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "ground_truth.npy": (np.dtype(np.float32), ()),
    "numeric_fp32.npy": (np.dtype(np.float32), (NUM_DENSE,)),
    "numeric_fp16.npy": (np.dtype(np.float16), (NUM_DENSE,)),
    "numeric_int8_linear.npy": (np.dtype(np.int8), (NUM_DENSE,)),
    "numeric_int8_chw4.npy": (np.dtype(np.int8), (INT8_CHW4_COLUMNS,)),
    "categorical_int32.npy": (np.dtype(np.int32), (NUM_SPARSE,)),
}


def make_chunk(laws: Sequence[AccessLaw], gen: torch.Generator, n: int, click_rate: float,
               device: torch.device) -> dict[str, np.ndarray]:
    """n random pairs as the split's arrays (numpy, on the host)."""
    missing = torch.tensor(synthetic.DENSE_MISSING, dtype=torch.float64, device=device)
    median = torch.tensor(synthetic.DENSE_LOG_MEDIAN, dtype=torch.float64, device=device)
    spread = torch.tensor(synthetic.DENSE_LOG_SPREAD, dtype=torch.float64, device=device)
    y = median + spread * torch.randn((n, NUM_DENSE), dtype=torch.float64, generator=gen, device=device)
    counts = torch.floor(torch.expm1(y.clamp_(min=0.0))).clamp_(max=synthetic.COUNT_MAX)
    counts[torch.rand((n, NUM_DENSE), dtype=torch.float64, generator=gen, device=device) < missing] = 0.0
    numeric = torch.log1p(counts).to(torch.float32)
    categorical = torch.empty((n, len(laws)), dtype=torch.int32, device=device)
    for t, law in enumerate(laws):
        u = torch.rand(n, dtype=torch.float64, generator=gen, device=device)
        categorical[:, t] = law.sample(u).to(torch.int32)
    labels = torch.rand(n, generator=gen, device=device) < click_rate
    return split_arrays(numeric.cpu().numpy(), categorical.cpu().numpy(), labels.cpu().numpy())


def write_split(directory: Path, laws: Sequence[AccessLaw], rows: int, seed: int, key: int, device: torch.device,
                click_rate: float, chunk_rows: int, progress: bool) -> None:
    """Write the six arrays of one split under `directory`, chunk by chunk (all renamed into place at the end)."""
    with ExitStack() as stack:
        streams = {name: NpyStream(stack, directory / name, dtype, (rows, *tail))
                   for name, (dtype, tail) in _SPLIT_LAYOUT.items()}
        bar = stack.enter_context(progress_bar(total=rows, unit="pairs", unit_scale=True, disable=not progress,
                                       desc=f"{PRESET_NAME} {directory.name}"))
        for c, lo in enumerate(range(0, rows, chunk_rows)):
            n = min(chunk_rows, rows - lo)
            arrays = make_chunk(laws, _generator(device, seed, key, c), n, click_rate, device)
            for name, stream in streams.items():
                stream.append(arrays[name])
            bar.update(n)
        for stream in streams.values():
            stream.check()


def write_expected_frequencies(path: Path, laws: Sequence[AccessLaw], device: torch.device,
                               lookups: float = TRAINING_PAIRS, chunk_rows: int = DATA_CHUNK_ROWS) -> None:
    """`row_frequencies.bin` (int32 T, then per table int32 R_t, float32 [R_t]) with lookups x P(row), streamed
    table by table."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<i", len(laws)))
        for law in laws:
            freq = torch.empty(law.rows, dtype=torch.float32, device=device)
            for lo in range(0, law.rows, chunk_rows):
                ranks = torch.arange(lo, min(lo + chunk_rows, law.rows), dtype=torch.int64, device=device)
                freq[law.rank_to_row(ranks)] = (law.probability(ranks) * lookups).to(torch.float32)
            f.write(struct.pack("<i", law.rows))
            f.write(freq.cpu().numpy().astype("<f4", copy=False).data)


def _fingerprint(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:32]


def _dataset_params(num_pairs: int, calibration_rows: int, cardinalities: Sequence[int], seed: int,
                    laws: Sequence[AccessLaw], click_rate: float, chunk_rows: int, device: torch.device) -> dict:
    return {"generator": GENERATOR, "seed": seed, "num_pairs": num_pairs, "calibration_rows": calibration_rows,
            "cardinalities": [int(c) for c in cardinalities], "access_exponents": [law.exponent for law in laws],
            "click_rate": click_rate, "chunk_rows": chunk_rows, "device_kind": device.type}


def _check_cardinalities(cardinalities: Sequence[int]) -> list[int]:
    cards = [int(c) for c in cardinalities]
    if len(cards) != NUM_SPARSE or min(cards) < 1 or max(cards) > np.iinfo(np.int32).max:
        raise UserError(f"need {NUM_SPARSE} table sizes between 1 and 2^31 - 1, got {cards}")
    return cards


def generate_dataset(output_dir: Path, num_pairs: int = CRITEO_TB_TEST_PAIRS,
                     cardinalities: Sequence[int] = CRITEO_TB_CARDINALITIES, seed: int = 0,
                     device: str | None = None, *, exponents: float | Sequence[float] = DEFAULT_EXPONENT,
                     calibration_rows: int = CALIBRATION_ROWS, click_rate: float = CLICK_RATE,
                     chunk_rows: int = DATA_CHUNK_ROWS, quantile_file: Path | None = None,
                     progress: bool = True, force: bool = False) -> Path:
    """Write the preset's preprocessed folder under `output_dir`; returns it.

    test/ (num_pairs pairs, its sample_partition.npy and trace), calibration/ (calibration_rows pairs),
    row_frequencies.bin, then meta.json last. A folder whose meta.json has the same fingerprint is kept as is.
    """
    output_dir = Path(output_dir)
    cards = _check_cardinalities(cardinalities)
    if num_pairs < 1 or calibration_rows < 0 or chunk_rows < 1:
        raise UserError(f"need num_pairs >= 1, calibration_rows >= 0, chunk_rows >= 1 (got {num_pairs}, "
                        f"{calibration_rows}, {chunk_rows})")
    dev = pick_device(device)
    laws = access_laws(cards, exponents, seed)
    params = _dataset_params(num_pairs, calibration_rows, cards, seed, laws, click_rate, chunk_rows, dev)
    fingerprint = _fingerprint(params)
    if not force and _meta_fingerprint(output_dir / "meta.json") == fingerprint and _dataset_complete(output_dir):
        return output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "meta.json").unlink(missing_ok=True)
    partition.write_partition(num_pairs, output_dir / "test", quantile_file)
    write_split(output_dir / "test", laws, num_pairs, seed, _KEY_TEST, dev, click_rate, chunk_rows, progress)
    if calibration_rows:
        write_split(output_dir / "calibration", laws, calibration_rows, seed, _KEY_CALIBRATION, dev, click_rate,
                    chunk_rows, progress)
    write_expected_frequencies(output_dir / FREQUENCIES_FILE, laws, dev)
    save_json(output_dir / "meta.json", {
        "format": 1, "name": PRESET_NAME, "source_dir": None, "max_ind_range": DEFAULT_MAX_IND_RANGE,
        "num_days": NUM_DAYS, "cardinalities": cards, "test_rows": num_pairs, "calibration_rows": calibration_rows,
        "train_rows": 0, "fingerprint": fingerprint, "preset": params,
        "note": "synthetic random test set for performance runs: AUC is meaningless here"})
    return output_dir


def _meta_fingerprint(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text()).get("fingerprint"))
    except (OSError, ValueError, AttributeError):
        return None


def _dataset_complete(directory: Path) -> bool:
    splits = [directory / "test" / name for name in _SPLIT_LAYOUT]
    extra = [directory / "test" / partition.PARTITION_FILE, directory / FREQUENCIES_FILE]
    return all(p.is_file() for p in splits + extra)


def mlp_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """The bottom and top MLPs with the reference's init: weight ~ N(0, sqrt(2 / (fan_in + fan_out))) [out, in],
    bias ~ N(0, sqrt(1 / fan_out)) [out]; fp32, drawn on the CPU (the same on every machine)."""
    from dlrm_bench.model.dlrm import reference_shapes

    gen = torch.Generator().manual_seed(_seed(seed, _KEY_MLP))
    state: dict[str, torch.Tensor] = {}
    for key, shape in reference_shapes([]).items():
        fan_out = shape[0]
        std = math.sqrt(2.0 / (shape[1] + fan_out)) if key.endswith(".weight") else math.sqrt(1.0 / fan_out)
        state[key] = torch.randn(shape, generator=gen, dtype=torch.float32) * std
    return state


def table_scales(cardinalities: Sequence[int]) -> list[float]:
    """Per table sqrt(1/R) / 127.5: max|W| / 127.5 of the reference's uniform(-sqrt(1/R), sqrt(1/R)) init."""
    return [math.sqrt(1.0 / int(r)) / 127.5 for r in cardinalities]


def random_table_chunks(cardinalities: Sequence[int], seed: int, device: torch.device,
                        chunk_rows: int = TABLE_CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Every table's rows, in order, as int8 [n, 128] chunks uniform in [-127, 127]."""
    for t, rows in enumerate(cardinalities):
        for c, lo in enumerate(range(0, int(rows), chunk_rows)):
            n = min(chunk_rows, int(rows) - lo)
            gen = _generator(device, seed, _KEY_TABLE, t, c)
            yield torch.randint(-127, 128, (n, EMBEDDING_DIM), dtype=torch.int8, generator=gen,
                                device=device).cpu().numpy()


def generate_model(output_dir: Path, cardinalities: Sequence[int] = CRITEO_TB_CARDINALITIES, seed: int = 0,
                   device: str | None = None, *, chunk_rows: int = TABLE_CHUNK_ROWS, progress: bool = True,
                   force: bool = False) -> Path:
    """Write the preset's model folder: int8 tables + scales, the MLP checkpoint and source.json; returns it."""
    from dlrm_bench.model.checkpoint import save_checkpoint

    output_dir = Path(output_dir)
    cards = _check_cardinalities(cardinalities)
    dev = pick_device(device)
    params = {"generator": GENERATOR, "seed": seed, "cardinalities": cards, "chunk_rows": chunk_rows,
              "device_kind": dev.type}
    key = f"{PRESET_NAME}:{_fingerprint(params)}"
    source = output_dir / SOURCE_FILE
    if not force and _source_key(source) == key and (output_dir / TABLES_FILE).is_file() \
            and (output_dir / MLP_FILE).is_file():
        return output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    source.unlink(missing_ok=True)
    write_tables(output_dir / TABLES_FILE, table_scales(cards), random_table_chunks(cards, seed, dev, chunk_rows),
                 sum(cards), progress)
    save_checkpoint(output_dir / MLP_FILE, mlp_state_dict(seed), {"preset": PRESET_NAME, "seed": seed})
    save_json(source, {"model_key": key, "preset": params})
    return output_dir


def _source_key(path: Path) -> str | None:
    try:
        return str(json.loads(path.read_text())["model_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _parse_cardinalities(text: str | None) -> list[int]:
    """"n0,n1,...,n25" -> 26 ints; None -> Criteo Terabyte's."""
    if not text:
        return list(CRITEO_TB_CARDINALITIES)
    try:
        return _check_cardinalities([int(x) for x in str(text).split(",")])
    except ValueError:
        raise UserError(f"--cardinalities: expected {NUM_SPARSE} comma-separated integers, got {text!r}") from None


def main(args: argparse.Namespace) -> int:
    """`dlrm-bench make-random-preset [--what all|data|model] [--output DIR] [--model-output DIR] [--num-pairs N]
    [--calibration-rows N] [--cardinalities n0,...,n25] [--seed S] [--device cpu|cuda] [--quantile-file F]
    [--force]`."""
    what = getattr(args, "what", None) or "all"
    if what not in ("all", "data", "model"):
        raise UserError(f"--what must be all, data or model, got {what!r}")
    seed = int(getattr(args, "seed", None) or 0)
    device = getattr(args, "device", None)
    force = bool(getattr(args, "force", False))
    cards = _parse_cardinalities(getattr(args, "cardinalities", None))
    dev = pick_device(device).type
    if what in ("all", "data"):
        out = Path(args.output) if getattr(args, "output", None) else paths.preprocessed_dir(PRESET_NAME)
        num_pairs = int(getattr(args, "num_pairs", None) or CRITEO_TB_TEST_PAIRS)
        calibration = getattr(args, "calibration_rows", None)
        calibration = CALIBRATION_ROWS if calibration is None else int(calibration)
        generate_dataset(out, num_pairs, cards, seed=seed, device=device, calibration_rows=calibration,
                         quantile_file=getattr(args, "quantile_file", None), force=force)
        print(f"{PRESET_NAME} dataset ({num_pairs:,} test pairs, generated on {dev}): {out}")
    if what in ("all", "model"):
        out = Path(args.model_output) if getattr(args, "model_output", None) else paths.models_dir() / PRESET_NAME
        generate_model(out, cards, seed=seed, device=device, force=force)
        print(f"{PRESET_NAME} model ({sum(cards):,} int8 rows, generated on {dev}): {out}")
    return 0
