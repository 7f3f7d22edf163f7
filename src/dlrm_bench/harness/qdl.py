"""LoadGen's Query Dispatch Library (`ConstructQDL`): the SUT of a network run, forwarding each query unbatched.

MLPerf's Network division (docs/network.md) lets the QDL on the LoadGen node neither batch, pad, cache nor
pre-process queries. So, unlike the batching SUT (sut.py), this one sends what LoadGen issues as it comes:
Server and SingleStream: one request per sample (a LoadGen query); Offline: LoadGen's one query cut, in its
order, into requests of at most `batch_size` pairs (samples of different queries never share a request). The
engine it drives spreads the requests over the nodes; each answer goes back to LoadGen from the thread that
received it. A request that fails is reported (`counters.errors`) and its samples completed with zeros so that
LoadGen never hangs; the runner then marks the run FAILED. `Name` asks the engine, which asks every node.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any, Callable

import mlperf_loadgen as lg
import numpy as np

from dlrm_bench.engines.base import Engine, cut_by_pairs
from dlrm_bench.harness.qsl import SampleLibrary
from dlrm_bench.harness.sut import Batch, BatchingSUT, Counters, make_sut
from dlrm_bench.interpreter import QuietInterpreter
from dlrm_bench.settings import Settings


COUNTED = ("requests", "pairs", "failed_over_requests", "failed_over_pairs")
"""Per-part counts in the engine's describe()["nodes"] that a test's report gives as the test's own share."""


def complete_samples(ids: np.ndarray, pairs: np.ndarray, predictions: np.ndarray) -> None:
    """QuerySamplesComplete for samples `ids` whose predictions lie one after another in `predictions`."""
    nbytes = np.asarray(pairs, dtype=np.int64) * 4
    base = predictions.__array_interface__["data"][0]
    addresses = base + np.concatenate(([0], np.cumsum(nbytes)[:-1]))
    lg.QuerySamplesComplete([lg.QuerySampleResponse(i, a, n) for i, a, n in
                             zip(ids.tolist(), addresses.tolist(), nbytes.tolist())])


class QueryDispatchSUT:
    """The QDL over `engine` for `scenario`; `name` gives LoadGen's SUT name (a round trip to every node)."""

    def __init__(self, engine: Engine, qsl: SampleLibrary, settings: Settings, scenario: str,
                 name: Callable[[], str]) -> None:
        self.engine = engine
        self.qsl = qsl
        self.name = name
        self.offline = scenario == "Offline"
        self.batch_size = settings.batch_size
        self.counters = Counters()
        self.issued = 0
        self.handle: int | None = None
        self.before: dict[str, Any] = {}
        self.interpreter = QuietInterpreter(settings.gil_switch_interval_ms, settings.gc_during_test,
                                            watch=settings.stall_watch)

    def _issue(self, samples: list[Any]) -> None:
        now = time.perf_counter()
        ids = np.fromiter((s.id for s in samples), dtype=np.uint64, count=len(samples))
        index = np.fromiter((s.index for s in samples), dtype=np.int64, count=len(samples))
        self.issued += len(ids)
        starts, ends = self.qsl.starts[index], self.qsl.ends[index]
        cuts = cut_by_pairs(ends - starts, self.batch_size) if self.offline else \
            [(i, i + 1) for i in range(len(ids))]
        for lo, hi in cuts:
            batch = Batch(ids[lo:hi], index[lo:hi], starts[lo:hi], ends[lo:hi], [now])
            future = self.engine.predict_ranges_async(batch.starts, batch.ends)
            batch.stamps.append(time.perf_counter())
            future.add_done_callback(lambda f, b=batch: self._complete(b, f))

    def _complete(self, batch: Batch, future: "Future[np.ndarray]") -> None:
        batch.stamps.append(time.perf_counter())
        try:
            predictions = np.ascontiguousarray(future.result(), dtype=np.float32)
            if predictions.shape != (batch.pairs,):
                raise RuntimeError(f"{predictions.shape} predictions for {batch.pairs} pairs")
        except BaseException as exc:  # reported; the samples still complete so that LoadGen does not hang
            self.counters.errors.append(f"{type(exc).__name__}: {exc}")
            predictions = np.zeros(batch.pairs, dtype=np.float32)
        self.counters.add(batch)  # first: LoadGen may end the test as soon as the last samples complete
        complete_samples(batch.ids, batch.ends - batch.starts, predictions)

    def _flush(self) -> None:
        """Nothing is held back: every request left when it was issued."""

    def report(self) -> dict[str, Any]:
        """For result.json: the samples LoadGen issued, where the engine sent this test's work (its describe()
        keys sut, division, endpoints; per node what it served and what went elsewhere when it went down)."""
        after = self.engine.describe()
        nodes = [{**a, **{k: a[k] - b[k] for k in COUNTED}}
                 for a, b in zip(after.get("nodes", []), self.before.get("nodes", []))]
        moved = sum(n["failed_over_requests"] for n in nodes)
        return {"engine": self.engine.name, "sut": after.get("sut"), "division": after.get("division"),
                "endpoints": after.get("endpoints"), "nodes": nodes, "failed_over_requests": moved,
                "failover": moved > 0, "samples_issued": self.issued}

    def __enter__(self) -> "QueryDispatchSUT":
        self.before = self.engine.describe()
        self.handle = lg.ConstructQDL(self._issue, self._flush, self.name)
        self.interpreter.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.interpreter.__exit__()
        if self.handle is not None:
            lg.DestroyQDL(self.handle)
            self.handle = None


def make_system(scenario: str, engine: Engine, qsl: SampleLibrary,
                settings: Settings) -> "BatchingSUT | QueryDispatchSUT":
    """The batching SUT for `sut` local, else the QDL (its Name from the engine's `sut_name`, which asks the
    nodes)."""
    if settings.sut == "local":
        return make_sut(scenario, engine, qsl, settings)
    return QueryDispatchSUT(engine, qsl, settings, scenario, getattr(engine, "sut_name"))
