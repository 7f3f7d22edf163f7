"""The MLPerf aggregation trace: how the test pairs are grouped into LoadGen samples (one sample = one user).

The reference draws each sample's size as `quantile[np.random.randint(0, len(quantile))]` from numpy's legacy
MT19937 generator seeded once with `np.random.seed(123)`, one draw per sample, accumulating sizes until the total
reaches the number of pairs; the last sample is truncated so the total is exactly the number of pairs. For the
Criteo Terabyte test set (89,137,319 pairs) that gives 330,067 samples.

Here the draws are made in blocks from a private `np.random.RandomState(seed)`: the legacy generator produces the
same sequence whether `randint` is called once per value or once per block, and a private instance yields the same
values as the reference's global one without touching numpy's global state.

Outputs (docs/FORMATS.md): `sample_partition.npy`, int32 [S + 1] start offsets then N, and the reference's text
trace `dlrm_trace_of_aggregated_samples.txt` with one "start, end, count" line per sample.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from dlrm_bench import paths
from dlrm_bench.atomic import atomic_path, save_npy
from dlrm_bench.errors import UserError

REFERENCE_SEED = 123
"""The reference's `--numpy-rand-seed` default, set once before the trace is drawn."""
PARTITION_FILE = "sample_partition.npy"
TRACE_FILE = "dlrm_trace_of_aggregated_samples.txt"
_INT32_MAX = np.iinfo(np.int32).max


def default_quantile_file() -> Path:
    """MLPerf's `tools/dist_quantile.txt` (20 sample sizes), as shipped in configs/dlrm/."""
    return paths.configs_dir() / "dlrm" / "dist_quantile.txt"


def load_quantiles(path: Path | None = None) -> np.ndarray:
    """Read a quantile file: one line of comma-separated positive integers. Returns int64 [Q].

    `path=None` reads the default file. A missing or malformed file is a UserError naming it.
    """
    explicit = path is not None
    path = Path(path) if explicit else default_quantile_file()
    if not path.is_file():
        hint = "" if explicit else " (pass --quantile-file with the reference's tools/dist_quantile.txt)"
        raise UserError(f"{path}: quantile file not found{hint}")
    try:
        lines = path.read_text().strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the quantile file ({exc})") from None
    line = lines[0] if lines else ""
    fields = [f.strip() for f in line.split(",")]
    try:
        values = np.array([int(f) for f in fields], dtype=np.int64)
    except ValueError:
        raise UserError(f"{path}: expected one line of comma-separated positive integers, "
                        f"found {line[:80]!r}") from None
    if values.size == 0 or np.any(values <= 0):
        raise UserError(f"{path}: quantiles must be positive integers, found {line[:80]!r}")
    return values


def aggregation_sizes(num_pairs: int, quantiles: np.ndarray, seed: int = REFERENCE_SEED) -> np.ndarray:
    """Sizes of the LoadGen samples covering `num_pairs` pairs. Returns int64 [S], summing to `num_pairs`.

    quantiles: int [Q], the inverse CDF of the sample size at Q evenly spaced probabilities.
    Equal to the reference's one-draw-at-a-time loop after `np.random.seed(seed)`.
    """
    if num_pairs < 1:
        raise UserError(f"the number of pairs must be at least 1, got {num_pairs}")
    quantiles = np.asarray(quantiles, dtype=np.int64)
    if quantiles.ndim != 1 or quantiles.size == 0 or np.any(quantiles <= 0):
        raise UserError("quantiles must be a non-empty list of positive integers")
    rng = np.random.RandomState(seed)
    mean = float(quantiles.mean())
    blocks: list[np.ndarray] = []
    remaining = int(num_pairs)
    while remaining > 0:
        block = quantiles[rng.randint(0, quantiles.size, size=_block_size(remaining, mean))]
        total = np.cumsum(block)
        stop = int(np.searchsorted(total, remaining))  # first draw whose running total reaches `remaining`
        if stop < block.size:
            block = block[: stop + 1].copy()
            block[-1] -= int(total[stop]) - remaining  # truncate the last sample
            blocks.append(block)
            break
        blocks.append(block)
        remaining -= int(total[-1])
    return np.concatenate(blocks)


def _block_size(remaining: int, mean: float) -> int:
    """How many draws to take next: a little more than the expected number still needed."""
    return int(math.ceil(remaining / mean * 1.01)) + 64


def partition_offsets(sizes: np.ndarray) -> np.ndarray:
    """Sample sizes int [S] -> int32 [S + 1]: the start offset of each sample, then the total."""
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    if offsets[-1] > _INT32_MAX:
        raise UserError(f"{int(offsets[-1])} pairs do not fit the int32 offsets of {PARTITION_FILE}")
    return offsets.astype(np.int32)


def trace_text(offsets: np.ndarray) -> str:
    """The reference's trace: one "start, end, count" line per sample, from offsets int [S + 1]."""
    starts = offsets[:-1].tolist()
    ends = offsets[1:].tolist()
    return "".join(f"{s}, {e}, {e - s}\n" for s, e in zip(starts, ends))


def write_partition(num_pairs: int, output_dir: Path, quantile_file: Path | None = None) -> np.ndarray:
    """Write `sample_partition.npy` and the text trace for `num_pairs` pairs under `output_dir`.

    Returns the offsets, int32 [S + 1]. Both files are written to temporary names and renamed into place.
    """
    if num_pairs < 1:
        raise UserError(f"the number of pairs must be at least 1, got {num_pairs}")
    if num_pairs > _INT32_MAX:
        raise UserError(f"{num_pairs} pairs do not fit the int32 offsets of {PARTITION_FILE}")
    sizes = aggregation_sizes(num_pairs, load_quantiles(quantile_file))
    offsets = partition_offsets(sizes)
    output_dir = Path(output_dir)
    with atomic_path(output_dir / TRACE_FILE) as tmp:
        with open(tmp, "w", newline="\n") as f:
            f.write(trace_text(offsets))
    save_npy(output_dir / PARTITION_FILE, offsets)
    return offsets


def main(args: argparse.Namespace) -> int:
    """`dlrm-bench make-partition --num-pairs N --output DIR [--quantile-file F]`."""
    offsets = write_partition(int(args.num_pairs), Path(args.output), getattr(args, "quantile_file", None))
    sizes = np.diff(offsets)
    print(f"{len(sizes)} samples for {int(offsets[-1])} pairs (sizes {int(sizes.min())}..{int(sizes.max())}, "
          f"mean {float(sizes.mean()):.1f}) -> {Path(args.output) / PARTITION_FILE}, {TRACE_FILE}")
    return 0
