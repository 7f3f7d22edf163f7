"""Systems under test: batch LoadGen's samples into pair batches for an engine, hand results back to LoadGen.

LoadGen's samples land in a sample queue (sample_queue.py: LoadGen's C API with a C queue, or its Python bindings,
setting `loadgen_bridge`). One batcher thread takes them out:
Offline: the whole query, cut in LoadGen's order into batches of at most `batch_size` pairs, with
`inflight_batches` batches in the engine at once.
Server and SingleStream: once an engine slot is free, queued samples until about `batch_size` pairs or
`server_max_wait_ms` after the oldest one's arrival (SingleStream: 0 ms, take what is queued now), so latency stays
bounded; a Server backlog of more than `batch_size` pairs goes in batches of up to `server_backlog_batch_size`.
Completion threads (`complete_threads`) hand the results back: one float32 prediction per pair of each sample,
from a buffer that stays alive until LoadGen's QuerySamplesComplete returns.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
import numpy as np

from dlrm_bench.engines.base import Engine, cut_by_pairs
from dlrm_bench.harness.qsl import SampleLibrary
from dlrm_bench.harness.sample_queue import SampleQueue, make_queue
from dlrm_bench.interpreter import QuietInterpreter
from dlrm_bench.settings import Settings


@dataclass
class Batch:
    """Samples that go to the engine together. ids: LoadGen response ids; index: QSL sample indices."""

    ids: np.ndarray
    index: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    stamps: list[float] = field(default_factory=list)  # perf_counter at batch_stamps.STAMPS

    @property
    def pairs(self) -> int:
        return int((self.ends - self.starts).sum())


@dataclass
class Counters:
    """Totals, plus one (perf_counter time, samples, pairs) entry per completed batch (for the throughput plot)
    and its stamps (harness/batch_stamps.py)."""

    samples: int = 0
    pairs: int = 0
    batches: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    stamps: list[tuple[float, ...]] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        now = time.perf_counter()
        with self.lock:
            self.samples += len(batch.ids)
            self.pairs += batch.pairs
            self.batches += 1
            self.timeline.append((now, len(batch.ids), batch.pairs))
            if len(batch.stamps) == 3:  # taken, sent, engine_done
                self.stamps.append((*batch.stamps, now, len(batch.ids), batch.pairs))


class Completer:
    """Hands finished batches back to LoadGen (through `queue`) from `threads` worker threads."""

    def __init__(self, threads: int, counters: Counters, queue: SampleQueue) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="complete")
        self.counters = counters
        self.queue = queue

    def submit(self, batch: Batch, future: "Future[np.ndarray]", release: threading.Semaphore | None) -> None:
        def done(fut: "Future[np.ndarray]") -> None:
            batch.stamps.append(time.perf_counter())
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
        self.queue.complete(batch.ids, batch.ends - batch.starts, predictions)
        self.counters.add(batch)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


@dataclass(frozen=True)
class TakePolicy:
    """How the batcher takes samples from the queue: at most `max_samples` samples and `max_pairs` pairs,
    waiting until `want_pairs` pairs are queued or the oldest has waited `max_wait_s`; a take goes to the engine
    in batches of at most `batch_pairs` pairs."""

    max_samples: int
    max_pairs: int
    want_pairs: int
    max_wait_s: float
    batch_pairs: int


SERVER_TAKE = 1 << 16
"""Server and SingleStream take at most this many samples at a time (their batches are capped by pairs)."""


def take_policy(scenario: str, settings: Settings) -> TakePolicy:
    """Offline: up to `offline_take_samples` of what is queued, at once (LoadGen issues the whole query at once; a
    take's host work must stay shorter than the batches in flight). Server: one batch of pairs, or what came
    within `server_max_wait_ms` of the oldest arrival; with a backlog, up to `server_backlog_batch_size` pairs.
    SingleStream: whatever is queued, at once."""
    if scenario == "Offline":
        return TakePolicy(settings.offline_take_samples, 1 << 62, 1, 0.0, settings.batch_size)
    if scenario == "SingleStream":
        return TakePolicy(SERVER_TAKE, settings.batch_size, settings.batch_size, 0.0, settings.batch_size)
    most = max(settings.batch_size, settings.server_backlog_batch_size)
    return TakePolicy(SERVER_TAKE, most, settings.batch_size, settings.server_max_wait_ms / 1000.0, most)


def batch_fill_note(batch_size: int, max_wait_ms: float, target_qps: float, pairs_per_sample: float) -> str | None:
    """A warning when `batch_size` pairs take longer to arrive at the Server target than `server_max_wait_ms`:
    then, under load, every batch goes out by the deadline part-full, and an engine that computes fixed batch sizes
    (the CUDA engine's graph buckets) pads the rest. None when the batch fills within the wait."""
    if target_qps <= 0 or pairs_per_sample <= 0:
        return None
    fill_ms = 1e3 * batch_size / (target_qps * pairs_per_sample)
    if fill_ms <= max_wait_ms:
        return None
    full = 100.0 * max_wait_ms / fill_ms
    return (f"Server: batch_size {batch_size:,} pairs take {fill_ms:.1f} ms to arrive at {target_qps:,.0f} samples/s "
            f"({pairs_per_sample:.1f} pairs each), longer than server_max_wait_ms {max_wait_ms:g}: under load "
            f"batches leave ~{full:.0f}% full. Raise server_max_wait_ms above {fill_ms:.1f} or lower batch_size.")


def batch_pieces_note(batch_pairs: int, engine_pairs: int | None) -> str | None:
    """A warning when the harness may send batches of `batch_pairs` pairs to an engine that computes at most
    `engine_pairs` at once (None: no limit): such a batch runs in pieces, so the larger batch gains nothing."""
    if engine_pairs is None or batch_pairs <= engine_pairs:
        return None
    return (f"batches of up to {batch_pairs:,} pairs (batch_size / server_backlog_batch_size) but the engine "
            f"computes at most {engine_pairs:,} at once (gpu_batch_size): larger batches run in pieces. Raise "
            f"gpu_batch_size to {batch_pairs:,} or lower the batch settings.")


class BatchingSUT:
    """The SUT of every scenario: a batcher thread takes samples from the queue by `policy`, cuts them in
    LoadGen's order into batches of at most `policy.batch_pairs` pairs and keeps `inflight_batches` in the engine;
    completion threads hand the results back."""

    def __init__(self, engine: Engine, qsl: SampleLibrary, settings: Settings, policy: TakePolicy,
                 queue: SampleQueue) -> None:
        self.engine = engine
        self.qsl = qsl
        self.inflight = threading.Semaphore(settings.inflight_batches)
        self.policy = policy
        self.queue = queue
        self.counters = Counters()
        self.completer = Completer(settings.complete_threads, self.counters, queue)
        self.handle: int | None = None
        self.thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self.interpreter = QuietInterpreter(settings.gil_switch_interval_ms, settings.gc_during_test,
                                            watch=settings.stall_watch)

    def _loop(self) -> None:
        """Wait for a free engine slot first, then take samples: while every slot is busy the samples gather in
        the queue, so a loaded Server sends full batches instead of one taken `server_max_wait_ms` after its
        oldest sample and then held until a slot frees (which alternated small and large batches)."""
        policy = self.policy
        while True:
            self.inflight.acquire()
            taken = self.queue.take(policy.max_samples, policy.max_pairs, policy.want_pairs, policy.max_wait_s)
            if taken is None:
                self.inflight.release()
                return
            now = time.perf_counter()
            ids, index = taken
            starts, ends = self.qsl.starts[index], self.qsl.ends[index]
            for number, (lo, hi) in enumerate(cut_by_pairs(ends - starts, policy.batch_pairs)):
                if number:  # the first batch has the slot taken above
                    self.inflight.acquire()
                self.dispatch(Batch(ids[lo:hi], index[lo:hi], starts[lo:hi], ends[lo:hi], [now]))

    def dispatch(self, batch: Batch) -> None:
        """Send `batch` to the engine; the caller holds one `inflight` slot, released when it completes."""
        future = self.engine.predict_ranges_async(batch.starts, batch.ends)
        batch.stamps.append(time.perf_counter())
        self.completer.submit(batch, future, self.inflight)

    def __enter__(self) -> "BatchingSUT":
        try:
            self.handle = self.queue.construct_sut()
        except BaseException:
            self.queue.close()  # a native queue is one per process: free it for the next SUT
            raise
        self.interpreter.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.interpreter.__exit__()
        self.queue.stop()
        if self.thread.is_alive():
            self.thread.join()
        self.completer.close()
        if self.handle is not None:
            self.queue.destroy_sut(self.handle)
            self.handle = None
        self.queue.close()


def make_sut(scenario: str, engine: Engine, qsl: SampleLibrary, settings: Settings) -> BatchingSUT:
    """The SUT for `scenario`, on the sample queue the setting `loadgen_bridge` names."""
    policy = take_policy(scenario, settings)
    queue = make_queue(settings.loadgen_bridge, qsl.lengths, policy.want_pairs)
    return BatchingSUT(engine, qsl, settings, policy, queue)
