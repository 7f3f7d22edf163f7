"""The two LoadGen sample queues (LoadGen's C API + C queue, and its Python bindings) through real LoadGen runs:
every sample gets exactly its own predictions, in both, in Offline, Server and SingleStream."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
import time
from pathlib import Path

import mlperf_loadgen as lg
import numpy as np
import pytest

from dlrm_bench.accuracy import read_accuracy_log
from dlrm_bench.criteo.dataset import Split
from dlrm_bench.engines.base import Engine, ranges_to_rows
from dlrm_bench.errors import UserError
from dlrm_bench.harness.loadgen_c_api import CApiUnavailable, load_c_api, symbol_values
from dlrm_bench.harness.loadgen_settings import log_settings
from dlrm_bench.harness.qsl import SampleLibrary
from dlrm_bench.harness.sample_queue import NativeSampleQueue, PythonSampleQueue, make_queue
from dlrm_bench.harness.sut import make_sut
from dlrm_bench.settings import Settings


class RowEngine(Engine):
    """Prediction of row r = (r % 997) / 997: every sample's predictions identify its rows."""

    name = "row"

    @property
    def device(self) -> str:
        return "cpu"

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        future: Future[np.ndarray] = Future()
        future.set_result((ranges_to_rows(starts, ends) % 997).astype(np.float32) / 997.0)
        return future


def offsets_for(samples: int, seed: int = 0) -> np.ndarray:
    sizes = np.random.default_rng(seed).integers(1, 700, size=samples)
    return np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)


def empty_split() -> Split:
    return Split(Path("."), np.zeros(1, np.float32), np.zeros((1, 13), np.float32), np.zeros((1, 26), np.int32))


def accuracy_run(tmp_path: Path, scenario: str, bridge: str, offsets: np.ndarray) -> tuple[str, dict]:
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, scenario)
    ts.mode = lg.TestMode.AccuracyOnly
    ts.server_target_qps = 2000
    ts.offline_expected_qps = 2000
    ts.single_stream_expected_latency_ns = 100_000
    out = tmp_path / f"{scenario}-{bridge}"
    out.mkdir()
    settings = Settings(batch_size=5000, complete_threads=2, inflight_batches=3, loadgen_bridge=bridge,
                        server_max_wait_ms=1.0)
    with SampleLibrary(empty_split(), offsets, len(offsets) - 1) as qsl, \
            make_sut(scenario, RowEngine(), qsl, settings) as sut:
        lg.StartTestWithLogSettings(sut.handle, qsl.handle, ts, log_settings(out), "")
        kind = sut.queue.kind
        assert sut.counters.samples == len(offsets) - 1
    return kind, read_accuracy_log(out / "mlperf_log_accuracy.json")


def native_available() -> bool:
    try:
        queue = NativeSampleQueue(np.ones(4, dtype=np.int64), 1)
    except Exception:  # noqa: BLE001 -- any reason: the test below says which
        return False
    queue.close()
    return True


@pytest.mark.parametrize("scenario", ["Offline", "Server", "SingleStream"])
@pytest.mark.parametrize("bridge", ["native", "python"])
def test_every_sample_gets_its_own_predictions(tmp_path: Path, scenario: str, bridge: str) -> None:
    if bridge == "native" and not native_available():
        pytest.skip("LoadGen's C API is not usable here")
    samples = 300 if scenario == "SingleStream" else 3000
    offsets = offsets_for(samples)
    kind, logged = accuracy_run(tmp_path, scenario, bridge, offsets)
    assert kind == bridge
    assert sorted(logged) == list(range(samples))
    for index, predictions in logged.items():
        rows = np.arange(offsets[index], offsets[index + 1])
        np.testing.assert_array_equal(predictions, (rows % 997).astype(np.float32) / 997.0)


def test_c_api_found_in_the_installed_loadgen() -> None:
    api = load_c_api()
    assert api.response_words in (3, 4)
    assert len({api.construct_sut, api.destroy_sut, api.query_samples_complete}) == 3


def test_not_an_elf_file_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.so"
    bogus.write_bytes(b"not an elf file at all" * 10)
    with pytest.raises(CApiUnavailable, match="bogus.so: not a 64-bit"):
        symbol_values(bogus, ["x"])


def test_no_compiler_falls_back_to_python(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CC", raising=False)
    queue = make_queue("native", np.ones(4, dtype=np.int64), 1)
    assert isinstance(queue, PythonSampleQueue)
    assert "using the Python bindings" in capsys.readouterr().out


def test_unknown_bridge_is_a_user_error() -> None:
    with pytest.raises(UserError, match="loadgen_bridge: expected one of native, python, got 'fast'"):
        make_queue("fast", np.ones(4, dtype=np.int64), 1)


def issuer(queue, kind: str):
    """issue([[response_id, sample_index], ...]) into `queue` as LoadGen would (the C bridge or the bindings)."""
    if kind == "native":
        return lambda s: queue.lib.bridge_issue(0, np.ascontiguousarray(s, dtype=np.uint64).ctypes.data, len(s))
    return lambda s: queue._issue([int(a) for a, _ in s], [int(b) for _, b in s])


@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_backlog_is_taken_up_to_max_pairs_at_once(kind: str) -> None:
    """Server with server_backlog_batch_size: with more than want_pairs pairs queued, one take returns up to
    max_pairs pairs without waiting. Samples 0..5 have 1..6 pairs (21 in all)."""
    if kind == "native" and not native_available():
        pytest.skip("LoadGen's C API is not usable here")
    queue = make_queue(kind, np.arange(1, 7, dtype=np.int64), wake_pairs=100)
    try:
        issuer(queue, kind)([[10 + i, i] for i in range(6)])
        t0 = time.perf_counter()
        ids, _ = queue.take(max_samples=10, max_pairs=15, want_pairs=5, max_wait_s=10.0)
        assert time.perf_counter() - t0 < 1.0
        assert ids.tolist() == [10, 11, 12, 13, 14]  # 1 + 2 + 3 + 4 + 5 = 15 pairs, three times want_pairs
    finally:
        queue.close()


@pytest.mark.parametrize("kind", ["native", "python"])
def test_take_by_pairs_waits_for_want_or_deadline(kind: str) -> None:
    """Samples 0..5 have 1, 2, 3, 4, 5, 6 pairs."""
    if kind == "native" and not native_available():
        pytest.skip("LoadGen's C API is not usable here")
    lengths = np.arange(1, 7, dtype=np.int64)
    queue = make_queue(kind, lengths, wake_pairs=100)
    issue = issuer(queue, kind)
    try:
        issue([[7, 0], [8, 1]])  # 3 pairs queued, 10 wanted: the 50 ms deadline passes
        t0 = time.perf_counter()
        ids, index = queue.take(max_samples=10, max_pairs=100, want_pairs=10, max_wait_s=0.05)
        assert time.perf_counter() - t0 >= 0.03
        assert ids.tolist() == [7, 8] and index.tolist() == [0, 1]
        issue([[9, 2], [10, 3], [11, 4], [12, 5]])  # 3 + 4 + 5 + 6 pairs
        ids, _ = queue.take(max_samples=10, max_pairs=8, want_pairs=1, max_wait_s=0.0)
        assert ids.tolist() == [9, 10]  # 7 pairs; the next sample would make 12
        ids, _ = queue.take(max_samples=10, max_pairs=2, want_pairs=1, max_wait_s=0.0)
        assert ids.tolist() == [11]  # over the pair budget alone: taken by itself
        queue.stop()
        ids, _ = queue.take(max_samples=10, max_pairs=100, want_pairs=100, max_wait_s=10.0)  # stopped: at once
        assert ids.tolist() == [12]
        assert queue.take(max_samples=10, max_pairs=100, want_pairs=1, max_wait_s=0.0) is None
    finally:
        queue.close()


@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_sample_left_behind_waits_from_its_own_arrival(kind: str) -> None:
    """A take that leaves a sample behind does not make it due at once: the next take still waits for
    `want_pairs` until max_wait_s past that sample's own arrival (a loaded Server then sends full batches
    instead of whatever was queued when a slot freed). Samples 0..2 have 1, 2, 3 pairs."""
    if kind == "native" and not native_available():
        pytest.skip("LoadGen's C API is not usable here")
    queue = make_queue(kind, np.array([1, 2, 3], dtype=np.int64), wake_pairs=100)
    issue = issuer(queue, kind)
    try:
        issue([[7, 0], [8, 1]])
        time.sleep(0.2)  # the queue's first sample is now 200 ms old
        issue([[9, 2]])
        arrived = time.perf_counter()
        ids, _ = queue.take(max_samples=10, max_pairs=3, want_pairs=1, max_wait_s=0.0)
        assert ids.tolist() == [7, 8]  # 3 pairs; sample 9 is left behind
        ids, _ = queue.take(max_samples=10, max_pairs=100, want_pairs=100, max_wait_s=0.15)
        waited = time.perf_counter() - arrived
        assert ids.tolist() == [9]
        assert 0.12 <= waited < 1.0, f"the left-behind sample was taken {waited * 1e3:.0f} ms after it arrived"
        issue(np.zeros((0, 2)))  # an empty issue into the empty queue is no arrival
        time.sleep(0.2)
        issue([[10, 0]])
        arrived = time.perf_counter()
        ids, _ = queue.take(max_samples=10, max_pairs=100, want_pairs=100, max_wait_s=0.15)
        waited = time.perf_counter() - arrived
        assert ids.tolist() == [10] and 0.12 <= waited < 1.0, f"taken {waited * 1e3:.0f} ms after it arrived"
    finally:
        queue.close()


def test_a_large_native_issue_is_taken_while_it_is_still_going_in() -> None:
    """One issue of 4,000,000 samples (Offline's single query; it goes in in pieces of 65,536 under the lock): a
    batcher taking at the same time gets every sample exactly once, in issue order, and its first batch before
    the issue has returned."""
    if not native_available():
        pytest.skip("LoadGen's C API is not usable here")
    count = 4_000_000
    queue = make_queue("native", np.full(count, 3, dtype=np.int64), wake_pairs=1)
    samples = np.stack([np.arange(count, dtype=np.uint64) + 10, np.arange(count, dtype=np.uint64)], axis=1)
    taken: list[np.ndarray] = []
    first_take_at: list[float] = []

    def batcher() -> None:
        while (got := queue.take(max_samples=20000, max_pairs=60000, want_pairs=1, max_wait_s=0.0)) is not None:
            if not first_take_at:
                first_take_at.append(time.perf_counter())
            taken.append(got[0])

    thread = threading.Thread(target=batcher)
    thread.start()
    try:
        time.sleep(0.05)  # the batcher waits in bridge_take
        queue.lib.bridge_issue(0, np.ascontiguousarray(samples).ctypes.data, count)
        issued_at = time.perf_counter()
        while sum(len(t) for t in taken) < count and thread.is_alive():
            time.sleep(0.01)
        queue.stop()
        thread.join(timeout=10)
    finally:
        queue.close()
    assert np.array_equal(np.concatenate(taken), np.arange(count, dtype=np.uint64) + 10)
    assert first_take_at and first_take_at[0] < issued_at


class ScriptedQueue:
    """A sample queue fed by the test: each `take` returns the next scripted (ids, indices) and records when it
    was called; `complete` records the ids. Only the batcher's order of calls is under test here; the real
    queues are tested against LoadGen above."""

    kind = "scripted"

    def __init__(self, takes: list[list[int]]) -> None:
        self.script = [np.asarray(t, dtype=np.int64) for t in takes]
        self.takes = 0
        self.completed: list[int] = []
        self.stopped = threading.Event()

    def construct_sut(self) -> int:
        return 0

    def destroy_sut(self, handle: int) -> None:
        pass

    def take(self, max_samples: int, max_pairs: int, want_pairs: int, max_wait_s: float):
        self.takes += 1
        if self.script:
            index = self.script.pop(0)
            return index.astype(np.uint64), index
        self.stopped.wait()
        return None

    def complete(self, ids: np.ndarray, pairs: np.ndarray, predictions: np.ndarray) -> None:
        self.completed.extend(int(i) for i in ids)

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        pass


class HeldEngine(RowEngine):
    """Answers each batch only when the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[Future, np.ndarray, np.ndarray]] = []
        self.opened = False
        self.lock = threading.Lock()

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        future: Future[np.ndarray] = Future()
        with self.lock:
            self.pending.append((future, starts, ends))
            if self.opened:
                self.release(len(self.pending) - 1)
        return future

    def release(self, number: int) -> None:
        future, starts, ends = self.pending[number]
        if not future.done():
            future.set_result(np.zeros(int((ends - starts).sum()), dtype=np.float32))

    def open(self) -> None:
        """Answer everything from now on (so a failing test still lets the SUT shut down)."""
        with self.lock:
            self.opened = True
            for number in range(len(self.pending)):
                self.release(number)


@contextmanager
def held_sut(queue: ScriptedQueue, engine: HeldEngine, offsets: np.ndarray, scenario: str, batch_size: int,
             inflight_batches: int, backlog_batch_size: int = 0) -> Iterator[None]:
    from dlrm_bench.harness.sut import BatchingSUT, take_policy

    settings = Settings(batch_size=batch_size, inflight_batches=inflight_batches,
                        server_backlog_batch_size=backlog_batch_size)
    with SampleLibrary(empty_split(), offsets, len(offsets) - 1) as qsl:
        with BatchingSUT(engine, qsl, settings, take_policy(scenario, settings), queue):
            try:
                yield
            finally:
                engine.open()
                wait_for(lambda: len(queue.completed) == len(offsets) - 1)


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < deadline, "timed out"
        time.sleep(0.001)


def test_batcher_takes_samples_only_when_an_engine_slot_is_free() -> None:
    """With one batch in flight allowed, the batcher must leave the queue alone until that batch completes, so
    the samples arriving meanwhile go out together (a loaded Server sends full batches)."""
    queue = ScriptedQueue([[0, 1], [2], [3, 4, 5]])
    engine = HeldEngine()
    with held_sut(queue, engine, offsets_for(6), "Server", 1 << 20, inflight_batches=1):
        wait_for(lambda: len(engine.pending) == 1)
        time.sleep(0.1)  # time enough for a batcher that takes before it has a slot
        assert queue.takes == 1
        engine.release(0)
        wait_for(lambda: len(engine.pending) == 2)
        time.sleep(0.05)
        assert queue.takes == 2
    assert queue.completed == [0, 1, 2, 3, 4, 5]


def test_offline_query_cut_into_batches_keeps_the_inflight_limit() -> None:
    """One take cut into several batches (6 samples of 10 pairs, 20 pairs a batch): each batch after the first
    waits for its own slot."""
    queue = ScriptedQueue([[0, 1, 2, 3, 4, 5]])
    engine = HeldEngine()
    offsets = np.arange(0, 61, 10, dtype=np.int64)
    with held_sut(queue, engine, offsets, "Offline", 20, inflight_batches=2):
        wait_for(lambda: len(engine.pending) == 2)
        time.sleep(0.05)
        assert len(engine.pending) == 2  # the third batch waits for a slot
        engine.release(0)
        wait_for(lambda: len(engine.pending) == 3)
    assert queue.completed == [0, 1, 2, 3, 4, 5]


def test_a_server_backlog_take_goes_to_the_engine_as_one_batch() -> None:
    """With server_backlog_batch_size, a take of more than batch_size pairs (the queue returns up to the backlog
    size) is one engine batch, not cut back into batch_size pieces (6 samples of 10 pairs, batch_size 20,
    backlog 60)."""
    queue = ScriptedQueue([[0, 1, 2, 3, 4, 5]])
    engine = HeldEngine()
    offsets = np.arange(0, 61, 10, dtype=np.int64)
    with held_sut(queue, engine, offsets, "Server", 20, inflight_batches=2, backlog_batch_size=60):
        wait_for(lambda: len(engine.pending) == 1)
        time.sleep(0.05)
        assert len(engine.pending) == 1
        _, starts, ends = engine.pending[0]
        assert int((ends - starts).sum()) == 60
    assert queue.completed == [0, 1, 2, 3, 4, 5]
