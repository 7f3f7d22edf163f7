"""Systems under test: batch LoadGen's samples into pair batches for an engine, hand results back to LoadGen.

Offline: the whole query is cut, in LoadGen's order, into batches of at most `batch_size` pairs, with
`inflight_batches` batches in the engine at once.
Server and SingleStream: a batcher thread takes queued samples until `batch_size` pairs or `server_max_wait_ms`
after the oldest one (0 ms: take what is queued now), so latency stays bounded.
Completion threads (`complete_threads`) build the responses: one float32 prediction per pair of each sample, from
a buffer that stays alive until `QuerySamplesComplete` returns.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import mlperf_loadgen as lg
import numpy as np

from dlrm_bench.engines.base import Engine, cut_by_pairs
from dlrm_bench.harness.qsl import SampleLibrary


@dataclass
class Batch:
    """Samples that go to the engine together. ids: LoadGen response ids; index: QSL sample indices."""

    ids: np.ndarray
    index: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    @property
    def pairs(self) -> int:
        return int((self.ends - self.starts).sum())


@dataclass
class Counters:
    """Totals, plus one (perf_counter time, samples, pairs) entry per completed batch (for the throughput plot)."""

    samples: int = 0
    pairs: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        with self.lock:
            self.samples += len(batch.ids)
            self.pairs += batch.pairs
            self.batches += 1
            self.timeline.append((time.perf_counter(), len(batch.ids), batch.pairs))


class Completer:
    """Hands finished batches back to LoadGen from `threads` worker threads."""

    def __init__(self, threads: int, counters: Counters) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="complete")
        self.counters = counters

    def submit(self, batch: Batch, future: "Future[np.ndarray]", release: threading.Semaphore | None) -> None:
        def done(fut: "Future[np.ndarray]") -> None:
            self.pool.submit(self._complete, batch, fut, release)

        future.add_done_callback(done)

    def _complete(self, batch: Batch, fut: "Future[np.ndarray]", release: threading.Semaphore | None) -> None:
        try:
            predictions = np.ascontiguousarray(fut.result(), dtype=np.float32)
            if predictions.shape != (batch.pairs,):
                raise RuntimeError(f"engine returned {predictions.shape} predictions for {batch.pairs} pairs")
        except BaseException as exc:  # report, and still complete the samples so LoadGen does not hang
            self.counters.errors.append(f"{type(exc).__name__}: {exc}")
            predictions = np.zeros(batch.pairs, dtype=np.float32)
        finally:
            if release is not None:
                release.release()
        complete_batch(batch, predictions)
        self.counters.add(batch)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def complete_batch(batch: Batch, predictions: np.ndarray) -> None:
    """QuerySamplesComplete for every sample of `batch`; `predictions` (float32 [pairs]) outlives the call."""
    base = predictions.__array_interface__["data"][0]
    nbytes = (batch.ends - batch.starts) * 4
    addresses = base + np.concatenate(([0], np.cumsum(nbytes)[:-1]))
    response = lg.QuerySampleResponse
    responses = [response(i, a, n) for i, a, n in zip(batch.ids.tolist(), addresses.tolist(), nbytes.tolist())]
    lg.QuerySamplesComplete(responses)


class SUTBase:
    """Common parts: the engine, the QSL, counters, completion threads, LoadGen handle."""

    def __init__(self, engine: Engine, qsl: SampleLibrary, settings: dict[str, Any]) -> None:
        self.engine = engine
        self.qsl = qsl
        self.batch_size = max(1, int(settings.get("batch_size", 16384)))
        self.inflight = threading.Semaphore(max(1, int(settings.get("inflight_batches", 2))))
        self.counters = Counters()
        self.completer = Completer(int(settings.get("complete_threads", 1)), self.counters)
        self.handle = None

    def make_batch(self, ids: Sequence[int], indices: Sequence[int]) -> Batch:
        ids_arr = np.array(ids, dtype=np.uint64)
        index = np.array(indices, dtype=np.int64)
        return Batch(ids_arr, index, self.qsl.starts[index], self.qsl.ends[index])

    def dispatch(self, batch: Batch) -> None:
        self.inflight.acquire()
        future = self.engine.predict_ranges_async(batch.starts, batch.ends)
        self.completer.submit(batch, future, self.inflight)

    def issue(self, ids: list[int], indices: list[int]) -> None:
        """LoadGen's fast issue callback: response ids and QSL sample indices of the new samples."""
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def __enter__(self) -> "SUTBase":
        self.handle = lg.ConstructFastSUT(self.issue, self.flush)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.completer.close()
        if self.handle is not None:
            lg.DestroySUT(self.handle)
            self.handle = None

    def stop(self) -> None:
        pass


class OfflineSUT(SUTBase):
    """One big query: sort, cut into pair batches, keep `inflight_batches` in the engine."""

    def __init__(self, engine: Engine, qsl: SampleLibrary, settings: dict[str, Any]) -> None:
        super().__init__(engine, qsl, settings)
        self.thread: threading.Thread | None = None

    def issue(self, ids: list[int], indices: list[int]) -> None:
        batch = self.make_batch(ids, indices)
        self.thread = threading.Thread(target=self._run, args=(batch,), name="offline-dispatch", daemon=True)
        self.thread.start()

    def _run(self, query: Batch) -> None:
        """Cut the query in LoadGen's order (no sort: the engine gathers rows on the device either way, and the
        first batch starts at once) into batches of at most batch_size pairs."""
        for lo, hi in cut_by_pairs(query.ends - query.starts, self.batch_size):
            self.dispatch(Batch(query.ids[lo:hi], query.index[lo:hi], query.starts[lo:hi], query.ends[lo:hi]))

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.join()


class DynamicBatchSUT(SUTBase):
    """Server and SingleStream: arrivals are appended to plain lists (cheap, on LoadGen's thread); a batcher
    thread takes everything pending once about `batch_size` pairs are waiting or `server_max_wait_ms` after the
    first arrival, converts it to arrays in one go and dispatches it in batches of at most `batch_size` pairs."""

    def __init__(self, engine: Engine, qsl: SampleLibrary, settings: dict[str, Any]) -> None:
        super().__init__(engine, qsl, settings)
        self.max_wait_s = float(settings.get("server_max_wait_ms", 1.0)) / 1000.0
        self.sample_budget = max(1, int(self.batch_size / max(qsl.mean_pairs_per_sample, 1.0)))
        self.cond = threading.Condition()
        self.pending_ids: list[int] = []
        self.pending_index: list[int] = []
        self.first_arrival = 0.0
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.thread.start()

    def issue(self, ids: list[int], indices: list[int]) -> None:
        with self.cond:
            if not self.pending_ids:
                self.first_arrival = time.perf_counter()
                self.cond.notify()
            self.pending_ids.extend(ids)
            self.pending_index.extend(indices)
            if len(self.pending_ids) >= self.sample_budget:
                self.cond.notify()

    def _take(self) -> tuple[list[int], list[int]] | None:
        """Wait for work, then until the batch is full or the oldest arrival has waited max_wait; None = stop."""
        with self.cond:
            while not self.pending_ids and self.running:
                self.cond.wait()
            if not self.pending_ids:
                return None
            deadline = self.first_arrival + self.max_wait_s
            while len(self.pending_ids) < self.sample_budget and self.running:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            taken = (self.pending_ids, self.pending_index)
            self.pending_ids, self.pending_index = [], []
            return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            batch = self.make_batch(*taken)
            for lo, hi in cut_by_pairs(batch.ends - batch.starts, self.batch_size):
                self.dispatch(Batch(batch.ids[lo:hi], batch.index[lo:hi], batch.starts[lo:hi], batch.ends[lo:hi]))

    def stop(self) -> None:
        if self.running:
            with self.cond:
                self.running = False
                self.cond.notify()
            self.thread.join()


def make_sut(scenario: str, engine: Engine, qsl: SampleLibrary, settings: dict[str, Any]) -> SUTBase:
    if scenario == "Offline":
        return OfflineSUT(engine, qsl, settings)
    if scenario == "SingleStream":
        settings = {**settings, "server_max_wait_ms": 0.0}
    return DynamicBatchSUT(engine, qsl, settings)
