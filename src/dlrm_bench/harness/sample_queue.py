"""Where LoadGen's issued samples wait for the batcher, and how finished samples go back to LoadGen.

Two implementations with one interface (`SampleQueue`):

* `NativeSampleQueue` ("native", the default): LoadGen's C API (loadgen_c_api.py) with the C queue in
  dlrm_bench/native/loadgen_bridge.c. Issuing appends to a C array on LoadGen's thread without the GIL; the
  batcher takes samples as one numpy array; completing a batch is one C call that builds every response record.
  No Python object is made per sample.
* `PythonSampleQueue` ("python"): LoadGen's Python bindings (`ConstructFastSUT`, `QuerySampleResponse`,
  `QuerySamplesComplete`). Used when the native one cannot be built (no C compiler, a stripped LoadGen build),
  and as the reference the native one is tested against.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import deque
from pathlib import Path
from typing import Protocol

import mlperf_loadgen as lg
import numpy as np

from dlrm_bench.errors import UserError
from dlrm_bench.harness.loadgen_c_api import CApiUnavailable, load_c_api
from dlrm_bench.c_build import NativeBuildError, compile_shared

BRIDGE_SOURCE = Path(__file__).with_name("loadgen_bridge.c")
SUT_NAME = b"dlrm-bench"
QUEUE_KINDS = ("native", "python")


class SampleQueue(Protocol):
    """The SUT side of LoadGen: takes issued samples out in batches and completes them."""

    kind: str

    def construct_sut(self) -> int:
        """A LoadGen SUT handle whose issued samples land in this queue."""

    def destroy_sut(self, handle: int) -> None: ...

    def take(self, max_samples: int, max_pairs: int, want_pairs: int,
             max_wait_s: float) -> tuple[np.ndarray, np.ndarray] | None:
        """Block until samples are queued, then until `want_pairs` pairs are queued or the head sample has waited
        `max_wait_s` since its own arrival (one left behind by an earlier take is not due at once); return the
        longest prefix of at most `max_samples` samples and `max_pairs` pairs (at least one sample) as (response
        ids uint64 [n], sample indices int64 [n]), in issue order. None once `stop` was called and the queue is
        empty."""

    def complete(self, ids: np.ndarray, pairs: np.ndarray, predictions: np.ndarray) -> None:
        """Hand finished samples to LoadGen: ids uint64 [n], pairs int64 [n], predictions float32 [sum(pairs)]
        (sample i's predictions follow sample i-1's). `predictions` must stay alive until this returns."""

    def stop(self) -> None:
        """Wake the batcher: `take` returns what is still queued, then None."""

    def close(self) -> None:
        """Release the queue (after the SUT is destroyed)."""


class PythonSampleQueue:
    """LoadGen's Python bindings; samples wait in Python lists under a condition variable.
    lengths: pairs per QSL sample, int64 [samples]; wake_pairs: queued pairs that wake the batcher early."""

    kind = "python"

    def __init__(self, lengths: np.ndarray, wake_pairs: int) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.wake_pairs = max(1, wake_pairs)
        self.cond = threading.Condition()
        self.ids: list[int] = []
        self.indices: list[int] = []
        self.queued_pairs = 0
        self.arrivals: deque[tuple[int, float]] = deque()  # (issued count after an issue, when it came)
        self.issued = 0
        self.taken = 0
        self.running = True

    def construct_sut(self) -> int:
        return lg.ConstructFastSUT(self._issue, self._flush)

    def destroy_sut(self, handle: int) -> None:
        lg.DestroySUT(handle)

    def _issue(self, ids: list[int], indices: list[int]) -> None:
        with self.cond:
            if not self.ids:
                self.cond.notify()
            if ids:
                self.issued += len(ids)
                self.arrivals.append((self.issued, time.perf_counter()))
            self.ids.extend(ids)
            self.indices.extend(indices)
            self.queued_pairs += int(self.lengths[indices].sum())
            if self.queued_pairs >= self.wake_pairs:
                self.cond.notify()

    def _flush(self) -> None:
        pass

    def take(self, max_samples: int, max_pairs: int, want_pairs: int,
             max_wait_s: float) -> tuple[np.ndarray, np.ndarray] | None:
        with self.cond:
            while not self.ids and self.running:
                self.cond.wait()
            if not self.ids:
                return None
            deadline = self.arrivals[0][1] + max_wait_s  # the head sample's own arrival
            while self.queued_pairs < want_pairs and self.running:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            head = np.array(self.indices[:max_samples], dtype=np.int64)
            pairs = np.cumsum(self.lengths[head])
            n = max(1, int(np.searchsorted(pairs, max_pairs, side="right")))
            ids, indices = self.ids[:n], head[:n]
            del self.ids[:n], self.indices[:n]
            self.queued_pairs -= int(pairs[n - 1])
            self.taken += n
            while self.arrivals and self.arrivals[0][0] <= self.taken:
                self.arrivals.popleft()
        return np.array(ids, dtype=np.uint64), indices

    def complete(self, ids: np.ndarray, pairs: np.ndarray, predictions: np.ndarray) -> None:
        nbytes = np.asarray(pairs, dtype=np.int64) * 4
        base = predictions.__array_interface__["data"][0]
        addresses = base + np.concatenate(([0], np.cumsum(nbytes)[:-1]))
        response = lg.QuerySampleResponse
        lg.QuerySamplesComplete([response(i, a, n) for i, a, n in
                                 zip(ids.tolist(), addresses.tolist(), nbytes.tolist())])

    def stop(self) -> None:
        with self.cond:
            self.running = False
            self.cond.notify_all()

    def close(self) -> None:
        pass


def _bind_bridge(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, size, i64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64
    u64 = ctypes.c_uint64
    lib.bridge_reset.argtypes, lib.bridge_reset.restype = [ptr, ctypes.c_int, ptr, size, u64], ctypes.c_int
    lib.bridge_take.argtypes, lib.bridge_take.restype = [ptr, size, u64, u64, ctypes.c_double], i64
    lib.bridge_complete.argtypes, lib.bridge_complete.restype = [ptr, ptr, ptr, size], ctypes.c_int
    lib.bridge_issue.argtypes, lib.bridge_issue.restype = [ctypes.c_size_t, ptr, size], None
    lib.bridge_stop.argtypes, lib.bridge_stop.restype = [], None
    lib.bridge_issued.argtypes, lib.bridge_issued.restype = [], ctypes.c_uint64
    return lib


class NativeSampleQueue:
    """LoadGen's C API and the C queue of loadgen_bridge.c (one per process: one LoadGen test at a time)."""

    kind = "native"
    _active_lock = threading.Lock()

    def __init__(self, lengths: np.ndarray, wake_pairs: int) -> None:
        self.lengths = np.ascontiguousarray(lengths, dtype=np.int64)  # read by the C queue until close()
        self.api = load_c_api()
        self.lib = _bind_bridge(compile_shared(BRIDGE_SOURCE, ["-std=gnu11", "-pthread"], "loadgen_bridge"))
        if not NativeSampleQueue._active_lock.acquire(blocking=False):
            raise RuntimeError("only one native LoadGen sample queue can be active per process")
        if self.lib.bridge_reset(self.api.query_samples_complete, self.api.response_words, self.lengths.ctypes.data,
                                 len(self.lengths), max(1, wake_pairs)):
            NativeSampleQueue._active_lock.release()
            raise MemoryError("cannot allocate the LoadGen sample queue")
        self.buffer = np.empty((0, 2), dtype=np.uint64)
        self.released = False

    def construct_sut(self) -> int:
        construct = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                                     ctypes.c_void_p, ctypes.c_void_p)(self.api.construct_sut)
        issue = ctypes.cast(self.lib.bridge_issue, ctypes.c_void_p).value
        flush = ctypes.cast(self.lib.bridge_flush, ctypes.c_void_p).value
        handle = construct(0, SUT_NAME, len(SUT_NAME), issue, flush)
        if not handle:
            raise RuntimeError("LoadGen's C ConstructSUT returned no SUT")
        return int(handle)

    def destroy_sut(self, handle: int) -> None:
        ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self.api.destroy_sut)(handle)

    def take(self, max_samples: int, max_pairs: int, want_pairs: int,
             max_wait_s: float) -> tuple[np.ndarray, np.ndarray] | None:
        if len(self.buffer) < max_samples:
            self.buffer = np.empty((max_samples, 2), dtype=np.uint64)
        n = self.lib.bridge_take(self.buffer.ctypes.data, max_samples, max_pairs, want_pairs, max_wait_s)
        if n < 0:
            return None
        taken = self.buffer[:n]
        return taken[:, 0].copy(), taken[:, 1].astype(np.int64)

    def complete(self, ids: np.ndarray, pairs: np.ndarray, predictions: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.uint64)
        pairs = np.ascontiguousarray(pairs, dtype=np.int64)
        predictions = np.ascontiguousarray(predictions, dtype=np.float32)
        if int(pairs.sum()) != predictions.size:
            raise ValueError(f"{predictions.size} predictions for {int(pairs.sum())} pairs")
        self.lib.bridge_complete(ids.ctypes.data, pairs.ctypes.data, predictions.ctypes.data, len(ids))

    def stop(self) -> None:
        self.lib.bridge_stop()

    def close(self) -> None:
        if not self.released:
            self.released = True
            NativeSampleQueue._active_lock.release()


def make_queue(kind: str, lengths: np.ndarray, wake_pairs: int) -> SampleQueue:
    """The queue `kind` asks for, over QSL samples of `lengths` pairs (int64 [samples]); "native" falls back to
    "python" (saying why in one line) when it cannot run."""
    if kind not in QUEUE_KINDS:
        raise UserError(f"setting loadgen_bridge: expected one of {', '.join(QUEUE_KINDS)}, got '{kind}'")
    if kind == "native":
        try:
            return NativeSampleQueue(lengths, wake_pairs)
        except (CApiUnavailable, NativeBuildError, OSError) as exc:
            print(f"harness: LoadGen's C API is not usable here ({exc}); using the Python bindings", flush=True)
    return PythonSampleQueue(lengths, wake_pairs)
