"""The one interface every inference engine implements. Engines know nothing about LoadGen.

An engine is built from a model (checkpoint or derived files) and a JSON-able settings dict, bound to one
preprocessed split (`load`), then asked for predictions of pair ranges of that split. The harness only talks to
this interface; it never knows which engine it drives.
"""

from __future__ import annotations

import abc
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np

from dlrm_bench.criteo.dataset import Split


def ranges_to_rows(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenate [starts[i], ends[i]) into one int64 row-index vector [sum(ends - starts)]."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    lengths = ends - starts
    total = int(lengths.sum())
    if len(starts) == 1:
        return np.arange(starts[0], ends[0], dtype=np.int64)
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + offsets


def contiguous_span(starts: np.ndarray, ends: np.ndarray) -> tuple[int, int] | None:
    """(first, last) if the ranges, in order, tile one contiguous span; else None."""
    if len(starts) == 0:
        return None
    if len(starts) > 1 and not np.array_equal(np.asarray(starts)[1:], np.asarray(ends)[:-1]):
        return None
    return int(starts[0]), int(ends[-1])


def cut_by_pairs(lengths: np.ndarray, batch_pairs: int) -> list[tuple[int, int]]:
    """Split consecutive samples with `lengths` pairs into [lo, hi) groups of at most `batch_pairs` pairs, greedily
    (a single sample larger than the limit forms a group of its own). One searchsorted per group."""
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    cuts: list[tuple[int, int]] = []
    lo, done, n = 0, 0, len(ends)
    while lo < n:
        hi = int(np.searchsorted(ends, done + batch_pairs, side="right"))
        hi = max(hi, lo + 1)
        cuts.append((lo, hi))
        done = int(ends[hi - 1])
        lo = hi
    return cuts


def chunk_ranges(starts: np.ndarray, ends: np.ndarray, max_pairs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group pair ranges into chunks of at most `max_pairs` pairs, cutting ranges longer than that, in order."""
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    if starts.size and int((ends - starts).max()) > max_pairs:
        pieces = [np.arange(s, e, max_pairs) for s, e in zip(starts.tolist(), ends.tolist())]
        new_starts = np.concatenate(pieces)
        new_ends = np.concatenate([np.minimum(p + max_pairs, e) for p, e in zip(pieces, ends.tolist())])
        starts, ends = new_starts, new_ends
    return [(starts[lo:hi], ends[lo:hi]) for lo, hi in cut_by_pairs(ends - starts, max_pairs)]


def join_futures(futures: list["Future[np.ndarray]"]) -> "Future[np.ndarray]":
    """One future whose result is the concatenation of `futures`' results, in order (the first error wins)."""
    if len(futures) == 1:
        return futures[0]
    out: Future[np.ndarray] = Future()
    remaining = [len(futures)]
    lock = threading.Lock()

    def done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        try:
            out.set_result(np.concatenate([f.result() for f in futures]))
        except BaseException as exc:  # handed to the caller through the future
            out.set_exception(exc)

    for f in futures:
        f.add_done_callback(done)
    return out


class Engine(abc.ABC):
    """Batched DLRM inference over one bound split.

    Subclasses implement `predict` (raw inputs) and may override `predict_ranges` / `predict_ranges_async`
    with a faster path (inputs already on the device, pipelined batches).
    """

    name: str = "engine"
    pads_batches: bool = False
    """True when the engine computes fixed batch sizes and pads a part-full batch (the CUDA engine's graph
    buckets): then batches that leave part-full waste work, and the harness warns about settings that cause it."""
    max_batch_pairs: int | None = None
    """The most pairs the engine computes at once (None: no limit); it runs a larger batch in pieces of this size,
    one after another, and the harness warns about settings that send such batches."""

    def __init__(self) -> None:
        self.split: Split | None = None

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """Where the engine computes, in words (e.g. 'cpu', 'cuda:0 (NVIDIA H100 80GB HBM3)')."""

    def load(self, split: Split) -> None:
        """Bind the split whose rows later calls refer to. The default keeps the memory maps as they are."""
        self.split = split

    @abc.abstractmethod
    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Click probabilities.

        numeric: float32 [B, 13] (log1p'd dense features); categorical: int32 [B, 26] (ids < cardinality).
        Returns float32 [B] in [0, 1].
        """

    def predict_ranges(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """Predictions for the pairs of [starts[i], ends[i]) of the bound split, concatenated: float32 [sum(len)]."""
        if self.split is None:
            raise RuntimeError(f"{self.name} engine: load() a split before predicting")
        span = contiguous_span(starts, ends)
        if span is not None:
            lo, hi = span
            return self.predict(np.asarray(self.split.numeric[lo:hi]), np.asarray(self.split.categorical[lo:hi]))
        rows = ranges_to_rows(starts, ends)
        return self.predict(self.split.numeric[rows], self.split.categorical[rows])

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        """Like predict_ranges but may return before the result is ready. The default computes synchronously."""
        future: Future[np.ndarray] = Future()
        try:
            future.set_result(self.predict_ranges(starts, ends))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future

    def warmup(self) -> None:
        """Compile / allocate ahead of timed work. Optional."""

    def describe(self) -> dict[str, Any]:
        """JSON-able facts for result.json (engine name, device, precision, settings)."""
        return {"engine": self.name, "device": self.device}

    def close(self) -> None:
        """Release devices, threads and files."""
