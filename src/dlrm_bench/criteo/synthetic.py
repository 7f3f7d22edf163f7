"""Synthetic Criteo days: raw day files in Criteo's exact text format, with labels from a hidden teacher.

Each row is a tab-separated line: label, 13 integer counts, 26 categories of 8 lowercase hex digits; any count or
category may be empty; lines end in "\\n". The shape follows Criteo Terabyte:

- categories: per feature a vocabulary whose size is Criteo's cardinality scaled down in log space (the largest
  feature gets `max_vocab` values, features with at most 1,000 values keep their size), drawn with power-law
  (Zipf-like) frequencies p(k) ~ (k + 1)^-a, a in [1.05, 1.35] per feature; each (feature, index) maps to a fixed
  pseudo-random 32-bit value, so `int(hex, 16) % max_ind_range` behaves like Criteo's hashes;
- counts: log-normal in log1p space with per-field medians and spreads measured on real Criteo rows
  (tests/data/train_1000.txt), capped at 1,500,000 (log1p < 14.2313, the int8 input scale);
- missing values at the per-field rates of those real rows; negative counts (-1..-3) in I2 at its real rate (10.9%),
  and rarely (0.1%) in I3 and I6;
- labels: Bernoulli(sigmoid(logit)) from a hidden teacher with the DLRM's own form: a linear term per category
  value and per count, plus the pairwise dot products of 8-dim latent vectors (one per category value, one
  projected from the 13 counts), with a bias solved so that the click rate hits its target.

The teacher sees exactly what a model sees after preprocessing (counts as log1p(max(x, 0)), missing -> 0), so its
AUC on the generated labels is the ceiling a trained DLRM can approach; it is written to synthetic_meta.json.

Click rate: 10% for `tiny` and `small` (Criteo Terabyte: ~3.3%, Kaggle: 25.6%). A rarer-positive problem like
Criteo's, but with 3x the positives, so the tiny test set (200,000 pairs) holds ~20,000 clicks (AUC standard error
~0.002) and a DLRM trained for minutes on 800,000 rows sees ~80,000 clicks. `full-day` uses Criteo's 3.3%.

Everything is a function of the seed: the teacher and every chunk of 100,000 rows have their own random stream,
so the same seed gives byte-identical files.
"""

from __future__ import annotations

import argparse
import collections
import gzip as gzip_module
import json
import math
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from tqdm import tqdm

from dlrm_bench import paths
from dlrm_bench.atomic import atomic_path, save_json
from dlrm_bench.criteo.schema import CRITEO_TB_CARDINALITIES, NUM_DENSE, NUM_SPARSE
from dlrm_bench.errors import UserError
from dlrm_bench.progress import progress_bar

META_FILE = "synthetic_meta.json"
CHUNK_ROWS = 100_000
"""Rows per random stream and per formatting step (fixed: the output must not depend on it)."""
LATENT_DIM = 8
LINEAR_SCALE, LATENT_SCALE = 0.175, 0.14
DENSE_LINEAR_SCALE, DENSE_LATENT_SCALE = 0.14, 0.11
"""Teacher weight scales (x a per-feature importance), tuned so the teacher's AUC is about 0.85 at a 10% click
rate, with the pairwise interactions carrying more of the logit's variance than the linear terms (the linear
terms alone rank at about 0.7)."""
TEACHER_ROWS_MAX = 1 << 16
"""Teacher rows per feature: vocabulary indices beyond half of this share hashed rows (bounded memory)."""
KEEP_VOCAB_BELOW = 1_000
"""Features with at most this many values keep Criteo's size at every scale."""
COUNT_MAX = 1_500_000
"""Largest count written: log1p(1.5e6) = 14.22 < 14.2313, so the int8 inputs never overflow."""
COUNT_MISSING = np.iinfo(np.int64).min
"""Marks a missing count in the int64 count arrays."""
TEACHER_AUC_ROWS_MAX = 2_000_000
"""The teacher's AUC is measured on the test rows of the last day (its first half), at most this many."""

# Measured on the 1,000 real rows of tests/data/train_1000.txt (I8: Criteo's 0.05%).
DENSE_MISSING = (0.458, 0.0, 0.230, 0.213, 0.041, 0.248, 0.039, 0.0005, 0.039, 0.458, 0.039, 0.775, 0.213)
DENSE_LOG_MEDIAN = (0.69, 1.39, 1.95, 1.61, 7.98, 3.81, 1.39, 2.20, 3.87, 0.30, 0.69, 0.30, 1.79)
DENSE_LOG_SPREAD = (1.03, 2.80, 1.35, 1.02, 2.50, 1.93, 1.78, 1.47, 1.72, 0.50, 0.80, 0.80, 1.19)
DENSE_NEGATIVE = (0.0, 0.109, 0.001, 0.0, 0.0, 0.001, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
CAT_MISSING = (0.0, 0.0, 0.033, 0.033, 0.0, 0.122, 0.0, 0.0, 0.0, 0.0, 0.0, 0.033, 0.0,
               0.0, 0.0, 0.033, 0.0, 0.0, 0.498, 0.498, 0.033, 0.815, 0.0, 0.033, 0.498, 0.498)

# Row layout of the fixed-width byte matrix that is compacted into text (NUL bytes are dropped).
_INT_WIDTH = 8  # sign + 7 digits
_HEX_WIDTH = 8
_INT_START = 2  # after "label\t"
_CAT_START = _INT_START + NUM_DENSE * (_INT_WIDTH + 1)
_ROW_WIDTH = _CAT_START + NUM_SPARSE * (_HEX_WIDTH + 1)
_POW10 = 10 ** np.arange(_INT_WIDTH - 2, -1, -1, dtype=np.int64)  # 1e6 .. 1
_DEC3 = np.array([list(f"{i:03d}".encode()) for i in range(1000)], dtype=np.uint8)  # [1000, 3] digit characters
_KEEP_CHARS = np.zeros((2 * _INT_WIDTH, _INT_WIDTH), dtype=np.uint8)
"""[16, 8]: row d (< 8) keeps the last d digits; row 8 + d also keeps the "-" sign; row 0 keeps nothing."""
for _d in range(1, _INT_WIDTH):
    _KEEP_CHARS[_d, _INT_WIDTH - _d:] = 1
    _KEEP_CHARS[_INT_WIDTH + _d, _INT_WIDTH - _d:] = 1
    _KEEP_CHARS[_INT_WIDTH + _d, 0] = 1
_HEX2_PAIRS = np.array([list(f"{i:02x}".encode()) for i in range(256)], dtype=np.uint8).view(np.uint16)[:, 0].copy()
"""uint16 [256]: the two hex characters of each byte value, read as one 16-bit word."""


@dataclass(frozen=True)
class ScaleSpec:
    """Default shape of one scale."""

    num_days: int
    rows_per_day: int
    max_vocab: int
    click_rate: float


SCALES: dict[str, ScaleSpec] = {
    "tiny": ScaleSpec(num_days=3, rows_per_day=400_000, max_vocab=40_000, click_rate=0.10),
    "small": ScaleSpec(num_days=5, rows_per_day=2_000_000, max_vocab=200_000, click_rate=0.10),
    # day_23 of Criteo Terabyte: 178,274,637 rows, whose first half is the 89,137,319-pair test set.
    "full-day": ScaleSpec(num_days=1, rows_per_day=178_274_637, max_vocab=4_000_000, click_rate=0.033),
}


def vocabulary_sizes(max_vocab: int) -> np.ndarray:
    """Criteo's 26 cardinalities scaled so the largest becomes `max_vocab`. Returns int64 [26].

    log(V / K) = e * log(C / K) for C > K = 1,000 (so the order and the shape are kept); smaller features keep C.
    """
    cards = np.array(CRITEO_TB_CARDINALITIES, dtype=np.float64)
    top = cards.max()
    if max_vocab >= top:
        return cards.astype(np.int64)
    if max_vocab <= KEEP_VOCAB_BELOW:
        return np.minimum(cards, max_vocab).astype(np.int64)
    e = math.log(max_vocab / KEEP_VOCAB_BELOW) / math.log(top / KEEP_VOCAB_BELOW)
    scaled = KEEP_VOCAB_BELOW * (np.maximum(cards, KEEP_VOCAB_BELOW) / KEEP_VOCAB_BELOW) ** e
    return np.where(cards <= KEEP_VOCAB_BELOW, cards, np.round(scaled)).astype(np.int64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit mixing function (SplitMix64's finaliser), elementwise on uint64 [...]."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _stream(seed: int, *key: int) -> np.random.Generator:
    """An independent random stream for (seed, key...)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


@dataclass
class Teacher:
    """The hidden model that makes the labels, plus the vocabulary shape it was drawn with.

    vocab: int64 [26]; exponents: float64 [26] (power-law exponent per feature); hex_keys: uint64 [26];
    cat_linear[j]: float32 [R_j + 1]; cat_latent[j]: float32 [R_j + 1, d] (R_j = min(V_j, 65536); the last row is
    "missing"); dense_linear: float32 [13]; dense_latent: float32 [13, d]; bias: float.
    """

    vocab: np.ndarray
    exponents: np.ndarray
    hex_keys: np.ndarray
    cat_linear: list[np.ndarray]
    cat_latent: list[np.ndarray]
    dense_linear: np.ndarray
    dense_latent: np.ndarray
    bias: float = 0.0

    def teacher_rows(self, j: int, index: np.ndarray) -> np.ndarray:
        """Vocabulary indices of feature j (int64 [n], -1 = missing) -> teacher rows int64 [n]."""
        rows = self.cat_linear[j].shape[0] - 1
        if self.vocab[j] <= rows:
            out = index.copy()
        else:  # the popular head keeps its own rows, the long tail shares hashed ones
            head = rows // 2
            tail = head + (_splitmix64(index.astype(np.uint64)) % np.uint64(rows - head)).astype(np.int64)
            out = np.where(index < head, index, tail)
        out[index < 0] = rows
        return out

    def logits(self, dense_log: np.ndarray, cat_index: np.ndarray) -> np.ndarray:
        """dense_log: float32 [n, 13] (log1p(max(x, 0)), missing -> 0); cat_index: int64 [n, 26] (-1 = missing).

        Returns float64 [n]: bias + linear terms + sum over the 351 pairs of the 27 latent vectors' dot products.
        """
        xs = (dense_log - np.float32(DENSE_LOG_MEDIAN)) / np.float32(DENSE_LOG_SPREAD)
        linear = xs @ self.dense_linear
        latent_sum = xs @ self.dense_latent  # [n, d]
        square_sum = np.einsum("nd,nd->n", latent_sum, latent_sum)
        for j in range(NUM_SPARSE):
            rows = self.teacher_rows(j, cat_index[:, j])
            linear += self.cat_linear[j][rows]
            v = self.cat_latent[j][rows]
            latent_sum += v
            square_sum += np.einsum("nd,nd->n", v, v)
        pairs = 0.5 * (np.einsum("nd,nd->n", latent_sum, latent_sum) - square_sum)
        return self.bias + linear.astype(np.float64) + pairs.astype(np.float64)


def make_teacher(seed: int, vocab: np.ndarray, click_rate: float) -> Teacher:
    """Draw the teacher for `seed`, then solve its bias so the mean click probability equals `click_rate`."""
    rng = _stream(seed, 0)
    exponents = rng.uniform(1.05, 1.35, NUM_SPARSE)
    importance = rng.lognormal(0.0, 0.5, NUM_SPARSE)  # some features matter much more than others
    cat_linear, cat_latent = [], []
    for j in range(NUM_SPARSE):
        rows = int(min(vocab[j], TEACHER_ROWS_MAX)) + 1
        cat_linear.append((rng.standard_normal(rows) * LINEAR_SCALE * importance[j]).astype(np.float32))
        latent = rng.standard_normal((rows, LATENT_DIM)) * (LATENT_SCALE * math.sqrt(importance[j]))
        cat_latent.append(latent.astype(np.float32))
    teacher = Teacher(
        vocab=np.asarray(vocab, dtype=np.int64), exponents=exponents,
        hex_keys=rng.integers(0, np.iinfo(np.uint64).max, NUM_SPARSE, dtype=np.uint64, endpoint=True),
        cat_linear=cat_linear, cat_latent=cat_latent,
        dense_linear=(rng.standard_normal(NUM_DENSE) * DENSE_LINEAR_SCALE).astype(np.float32),
        dense_latent=(rng.standard_normal((NUM_DENSE, LATENT_DIM)) * DENSE_LATENT_SCALE).astype(np.float32))
    teacher.bias = _solve_bias(teacher, _stream(seed, 2), click_rate)
    return teacher


def _solve_bias(teacher: Teacher, rng: np.random.Generator, click_rate: float, rows: int = 50_000) -> float:
    """The bias b with mean(sigmoid(logit + b)) = click_rate over a pilot sample (Newton's method)."""
    if not 0.0 < click_rate < 1.0:
        raise UserError(f"the click rate must lie strictly between 0 and 1, got {click_rate}")
    _, dense_log, cat_index = _sample_features(teacher, rng, rows)
    z = teacher.logits(dense_log, cat_index) - teacher.bias
    b = math.log(click_rate / (1 - click_rate)) - float(np.median(z))
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(z + b)))
        gap = float(p.mean()) - click_rate
        if abs(gap) < 1e-7:
            break
        b -= gap / max(float((p * (1 - p)).mean()), 1e-9)
    return b


def _sample_features(teacher: Teacher, rng: np.random.Generator,
                     n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw n rows of raw features.

    Returns counts int64 [n, 13] (COUNT_MISSING where missing), dense_log float32 [n, 13] (what a model sees),
    cat_index int64 [n, 26] (power-law vocabulary indices, -1 = missing).
    """
    counts = _sample_counts(rng, n)
    dense_log = np.log1p(np.maximum(counts, 0)).astype(np.float32)
    cat_index = np.empty((n, NUM_SPARSE), dtype=np.int64)
    for j in range(NUM_SPARSE):
        cat_index[:, j] = _power_law(rng, n, int(teacher.vocab[j]), float(teacher.exponents[j]))
    cat_index[rng.random((n, NUM_SPARSE)) < np.array(CAT_MISSING)] = -1
    return counts, dense_log, cat_index


def _sample_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Heavy-tailed counts int64 [n, 13]: log1p(x) ~ Normal(median, spread) clipped at 0; some negative, some missing."""
    y = np.float64(DENSE_LOG_MEDIAN) + np.float64(DENSE_LOG_SPREAD) * rng.standard_normal((n, NUM_DENSE))
    counts = np.minimum(np.floor(np.expm1(np.maximum(y, 0.0))), COUNT_MAX).astype(np.int64)
    negative = rng.random((n, NUM_DENSE)) < np.array(DENSE_NEGATIVE)
    counts[negative] = -rng.integers(1, 4, size=int(negative.sum()))
    counts[rng.random((n, NUM_DENSE)) < np.array(DENSE_MISSING)] = COUNT_MISSING
    return counts


def _power_law(rng: np.random.Generator, n: int, vocab: int, a: float) -> np.ndarray:
    """n indices in [0, vocab) with P(k) ~ (k + 1)^-a (inverse CDF of the continuous law, floored). int64 [n]."""
    e = 1.0 - a
    lo, hi = 1.0, float(vocab + 1) ** e
    x = (lo + rng.random(n) * (hi - lo)) ** (1.0 / e) - 1.0
    return np.minimum(x.astype(np.int64), vocab - 1)


def hex_values(teacher: Teacher, j: int, index: np.ndarray) -> np.ndarray:
    """The fixed pseudo-random 32-bit value of each vocabulary index of feature j. uint32 [n]."""
    mixed = _splitmix64(index.astype(np.uint64) ^ teacher.hex_keys[j])
    return (mixed >> np.uint64(32)).astype(np.uint32)


@dataclass
class Chunk:
    """One block of generated rows: its text (uint8 [bytes]) plus labels int8 [n] and click probabilities
    float64 [n] for the metadata."""

    text: np.ndarray
    labels: np.ndarray
    prob: np.ndarray


def make_chunk(teacher: Teacher, seed: int, day: int, chunk: int, n: int) -> Chunk:
    """Generate and format the rows of (day, chunk): n rows from that chunk's own random stream."""
    rng = _stream(seed, 1, day, chunk)
    counts, dense_log, cat_index = _sample_features(teacher, rng, n)
    prob = 1.0 / (1.0 + np.exp(-teacher.logits(dense_log, cat_index)))
    labels = (rng.random(n) < prob).astype(np.int8)
    hexes = np.stack([hex_values(teacher, j, cat_index[:, j]) for j in range(NUM_SPARSE)], axis=1)
    return Chunk(format_rows(labels, counts, hexes, cat_index < 0), labels, prob)


def format_rows(labels: np.ndarray, counts: np.ndarray, hexes: np.ndarray, cat_missing: np.ndarray) -> np.ndarray:
    """Criteo text for n rows, vectorised: a fixed-width byte matrix whose NUL padding is then dropped.

    labels: int [n] (0/1); counts: int64 [n, 13] (COUNT_MISSING = empty; |x| <= COUNT_MAX);
    hexes: uint32 [n, 26]; cat_missing: bool [n, 26]. Returns the lines' bytes, uint8 [bytes], each line ending
    in "\\n".
    """
    n = labels.shape[0]
    mat = np.zeros((n, _ROW_WIDTH), dtype=np.uint8)
    mat[:, 0] = 48 + labels
    mat[:, 1] = 9
    ints = mat[:, _INT_START:_CAT_START].reshape(n, NUM_DENSE, _INT_WIDTH + 1)
    ints[:, :, :_INT_WIDTH] = _int_chars(counts)
    ints[:, :, _INT_WIDTH] = 9
    cats = mat[:, _CAT_START:].reshape(n, NUM_SPARSE, _HEX_WIDTH + 1)
    byte_values = hexes.astype(">u4").view(np.uint8).reshape(n, NUM_SPARSE, 4)
    digits = np.take(_HEX2_PAIRS, byte_values).view(np.uint8).reshape(n, NUM_SPARSE, _HEX_WIDTH)
    digits[cat_missing] = 0
    cats[:, :, :_HEX_WIDTH] = digits
    cats[:, :, _HEX_WIDTH] = 9
    cats[:, -1, _HEX_WIDTH] = 10
    flat = mat.reshape(-1)
    return flat[flat != 0]


def _int_chars(counts: np.ndarray) -> np.ndarray:
    """Right-aligned decimal text of counts int64 [n, 13] as uint8 [n, 13, 8], NUL where no character goes.

    All 8 characters ("-" then 7 digits with leading zeros) are written, then multiplied by a 0/1 row of
    _KEEP_CHARS picked by (number of digits, sign); a missing count picks the all-zero row.
    """
    missing = counts == COUNT_MISSING
    value = np.where(missing, 0, np.abs(counts)).astype(np.int32)
    out = np.empty(counts.shape + (_INT_WIDTH,), dtype=np.uint8)
    out[:, :, 0] = ord("-")
    out[:, :, 1] = 48 + value // 1_000_000
    out[:, :, 2:5] = np.take(_DEC3, (value // 1000) % 1000, axis=0)
    out[:, :, 5:8] = np.take(_DEC3, value % 1000, axis=0)
    ndigits = np.ones(value.shape, dtype=np.int32)
    for power in _POW10[-2::-1]:  # 10 .. 1e6
        ndigits += value >= power
    ndigits[missing] = 0
    ndigits[counts < 0] += _INT_WIDTH
    out *= np.take(_KEEP_CHARS, ndigits, axis=0)
    return out


def _chunk_sizes(rows: int) -> Iterator[tuple[int, int]]:
    """(chunk index, rows) covering `rows` in CHUNK_ROWS blocks."""
    for c, start in enumerate(range(0, rows, CHUNK_ROWS)):
        yield c, min(CHUNK_ROWS, rows - start)


class _DayStats:
    """Clicks per day, and (label, probability) of the last day's test rows for the teacher's AUC."""

    def __init__(self) -> None:
        self.clicks: list[int] = []
        self.auc_labels: list[np.ndarray] = []
        self.auc_prob: list[np.ndarray] = []

    def teacher_auc(self) -> tuple[float | None, int]:
        from sklearn.metrics import roc_auc_score

        if not self.auc_labels:
            return None, 0
        labels = np.concatenate(self.auc_labels)
        if labels.min() == labels.max():
            return None, int(labels.size)
        return float(roc_auc_score(labels, np.concatenate(self.auc_prob))), int(labels.size)


def _write_day(handle: BinaryIO, chunks: Iterator[Chunk], rows: int, is_last: bool, stats: _DayStats,
               bar: tqdm) -> None:
    """Write one day's chunks, in order, to an open binary handle; record clicks and the teacher's test rows."""
    test_rows = min((rows + 1) // 2, TEACHER_AUC_ROWS_MAX) if is_last else 0
    clicks, done = 0, 0
    for _ in range(_num_chunks(rows)):
        chunk = next(chunks)
        n = chunk.labels.shape[0]
        handle.write(memoryview(chunk.text))
        clicks += int(chunk.labels.sum())
        if done < test_rows:
            take = min(n, test_rows - done)
            stats.auc_labels.append(chunk.labels[:take])
            stats.auc_prob.append(chunk.prob[:take])
        done += n
        bar.update(n)
    stats.clicks.append(clicks)


def _num_chunks(rows: int) -> int:
    return -(-rows // CHUNK_ROWS)


_WORKER_TEACHER: Teacher | None = None


def _init_worker(teacher: Teacher) -> None:
    global _WORKER_TEACHER
    _WORKER_TEACHER = teacher


def _worker_chunk(seed: int, day: int, chunk: int, n: int) -> Chunk:
    assert _WORKER_TEACHER is not None
    return make_chunk(_WORKER_TEACHER, seed, day, chunk, n)


def _all_chunks(teacher: Teacher, seed: int, num_days: int, rows: int, workers: int) -> Iterator[Chunk]:
    """Every chunk of every day, in file order; with workers > 1 made by a process pool, at most 2 per worker
    in flight (bounded memory). The bytes do not depend on `workers`."""
    jobs = ((seed, day, c, n) for day in range(num_days) for c, n in _chunk_sizes(rows))
    if workers <= 1:
        for job in jobs:
            yield make_chunk(teacher, *job)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(teacher,)) as pool:
        pending: collections.deque[Future[Chunk]] = collections.deque()
        for job in jobs:
            pending.append(pool.submit(_worker_chunk, *job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _day_name(day: int, gzip: bool) -> str:
    return f"day_{day}.gz" if gzip else f"day_{day}"


def _request(scale: str, seed: int, num_days: int, rows_per_day: int, gzip: bool, click_rate: float) -> dict:
    """The parameters that fully determine the output (compared with an existing synthetic_meta.json)."""
    return {"generator": "dlrm_bench.criteo.synthetic/1", "scale": scale, "seed": seed, "num_days": num_days,
            "rows_per_day": rows_per_day, "gzip": gzip, "click_rate_target": click_rate}


def _already_complete(output_dir: Path, request: dict) -> list[Path] | None:
    """The day files if synthetic_meta.json records this exact request and every file has its recorded size."""
    meta_path = output_dir / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if {k: meta.get(k) for k in request} != request:
        return None
    files = [output_dir / name for name in meta.get("files", {})]
    if len(files) != request["num_days"]:
        return None
    for path in files:
        if not path.is_file() or path.stat().st_size != meta["files"][path.name]:
            return None
    return files


def generate_days(output_dir: Path, scale: str, seed: int, num_days: int | None = None,
                  rows_per_day: int | None = None, gzip: bool = False, *, click_rate: float | None = None,
                  workers: int | None = None, force: bool = False) -> list[Path]:
    """Write day_0 .. day_{n-1} (or day_k.gz) and synthetic_meta.json under `output_dir`; return the day paths.

    Defaults come from SCALES[scale]. A folder whose synthetic_meta.json records the same request and whose files
    are complete is left as it is (unless `force`). Each file is written to a temporary name, then renamed.
    `workers` processes format chunks in parallel (default: the usable CPUs, at most 8); the bytes do not
    depend on it.
    """
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}: choose one of {', '.join(SCALES)}")
    spec = SCALES[scale]
    num_days = spec.num_days if num_days is None else int(num_days)
    rows_per_day = spec.rows_per_day if rows_per_day is None else int(rows_per_day)
    click_rate = spec.click_rate if click_rate is None else float(click_rate)
    if num_days < 1 or rows_per_day < 1:
        raise UserError(f"need at least one day of at least one row, got {num_days} days x {rows_per_day} rows")
    output_dir = Path(output_dir)
    request = _request(scale, seed, num_days, rows_per_day, gzip, click_rate)
    if not force and (existing := _already_complete(output_dir, request)) is not None:
        return existing
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / META_FILE).unlink(missing_ok=True)  # the folder is incomplete until the new meta lands

    started = time.perf_counter()
    teacher = make_teacher(seed, vocabulary_sizes(spec.max_vocab), click_rate)
    stats = _DayStats()
    written: list[Path] = []
    workers = min(_available_cpus(), 8) if workers is None else int(workers)
    chunks = _all_chunks(teacher, seed, num_days, rows_per_day, workers)
    with progress_bar(total=num_days * rows_per_day, unit="rows", unit_scale=True, desc=f"generate {scale}",
              disable=None) as bar:
        for day in range(num_days):
            final = output_dir / _day_name(day, gzip)
            is_last = day == num_days - 1
            with atomic_path(final) as tmp, open(tmp, "wb") as raw:
                if gzip:
                    with gzip_module.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1) as gz:
                        _write_day(gz, chunks, rows_per_day, is_last, stats, bar)
                else:
                    _write_day(raw, chunks, rows_per_day, is_last, stats, bar)
            written.append(final)
        chunks.close()
    _write_meta(output_dir, request, teacher, stats, written, time.perf_counter() - started)
    return written


def _write_meta(output_dir: Path, request: dict, teacher: Teacher, stats: _DayStats, files: list[Path],
                seconds: float) -> None:
    """synthetic_meta.json: the request, the measured click rate and the teacher's AUC (the ceiling)."""
    auc, auc_rows = stats.teacher_auc()
    total = request["num_days"] * request["rows_per_day"]
    meta = dict(request)
    meta.update({
        "total_rows": total,
        "clicks_per_day": stats.clicks,
        "click_rate": sum(stats.clicks) / total,
        "teacher_auc": auc,
        "teacher_auc_rows": auc_rows,
        "teacher_auc_note": "AUC of the hidden teacher's click probabilities on the last day's first half (the "
                            "test rows), capped at 2,000,000 rows: the ceiling for a trained model",
        "vocabulary_sizes": teacher.vocab.tolist(),
        "vocabulary_total": int(teacher.vocab.sum()),
        "power_law_exponents": [round(float(a), 4) for a in teacher.exponents],
        "latent_dim": LATENT_DIM,
        "generation_seconds": round(seconds, 2),
        "files": {p.name: p.stat().st_size for p in files},
    })
    save_json(output_dir / META_FILE, meta)


def main(args: argparse.Namespace) -> int:
    """`dlrm-bench generate-data --scale S [--output DIR] [--seed N] [--days D] [--rows-per-day R] [--gzip]`."""
    scale = args.scale
    output = Path(args.output) if args.output is not None else paths.raw_days_dir(f"synthetic-{scale}")
    files = generate_days(output, scale, int(args.seed), args.days, args.rows_per_day, bool(args.gzip),
                          click_rate=getattr(args, "click_rate", None))
    meta = json.loads((output / META_FILE).read_text())
    auc = meta["teacher_auc"]
    print(f"{len(files)} day files x {meta['rows_per_day']:,} rows in {output} "
          f"(click rate {meta['click_rate']:.4f}, teacher AUC {auc if auc is None else round(auc, 4)}, "
          f"{meta['vocabulary_total']:,} category values, {meta['generation_seconds']} s)")
    return 0
