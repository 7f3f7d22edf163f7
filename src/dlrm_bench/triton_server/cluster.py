"""A network SUT's nodes as one `Engine`: each call becomes requests to the node with the fewest pairs outstanding,
and the requests of a node that goes down go to the others.

Format (`sut`): `network` sends each request's features (NUMERIC fp32 [n, 13], CATEGORICAL int32 [n, 26], as the
QSL holds them on this node); `network_ranges` sends only ROW_RANGES of the nodes' own test split (open division,
docs/network.md). A request carries at most the smallest `max_batch_pairs` of the nodes; up to `network_inflight`
full-size requests per model instance are outstanding on a node, the rest wait here in order.

Faults: a request that fails in transport (connection refused or reset, deadline) or a node whose health checks
fail for `network_node_timeout_s` marks the node down for the rest of the process; every request outstanding on it
goes back to the head of the queue, to the other nodes. An answer that arrives for a request already re-sent is
dropped, so each request is answered once. With no node left every waiting and later request fails with
`NetworkSUTFailed`, naming each node and why it went down. A node's own error (a malformed request) fails that
request alone.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlrm_bench.criteo.dataset import DatasetMeta, Split
from dlrm_bench.engines.base import Engine, chunk_ranges, contiguous_span, join_futures, ranges_to_rows
from dlrm_bench.errors import UserError
from dlrm_bench.settings import Settings
from dlrm_bench.triton_server import protocol as wire
from dlrm_bench.triton_server.identity import model_identity
from dlrm_bench.triton_server.node import NodeInfo, RemoteNode, parse_endpoints

TRANSPORT_ERRORS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "SOCKET CLOSED", "CONNECTION RESET",
                    "FAILED TO CONNECT", "CHANNEL CLOSED", "CANNOT INVOKE RPC")
"""gRPC failures that blame the node's reachability, not the request."""
PROBE_INTERVAL_S = 0.25
FORMATS = {"network": "rows", "network_ranges": "ranges"}


class NetworkSUTFailed(UserError):
    """Every node of the network SUT is down."""


@dataclass(eq=False)
class Request:
    """One request: pair ranges of the split, its future, and where it is now (node, attempt)."""

    number: int
    starts: np.ndarray
    ends: np.ndarray
    pairs: int
    future: "Future[np.ndarray]"
    node: RemoteNode | None = None
    attempt: int = 0
    inputs: list[Any] | None = None


def is_transport_error(error: BaseException) -> bool:
    text = f"{getattr(error, 'status', lambda: '')()} {error}".upper()
    return any(marker in text for marker in TRANSPORT_ERRORS)


class NetworkEngine(Engine):
    """The nodes at `endpoints`, checked against this node's dataset `meta` (and model, if present here)."""

    def __init__(self, endpoints: list[str], mode: str, meta: DatasetMeta, model_path: Path | None,
                 settings: Settings) -> None:
        super().__init__()
        self.mode, self.inputs = mode, FORMATS[mode]
        self.meta, self.settings = meta, settings
        self.local_model = model_identity(model_path) if model_path is not None else ""
        probe_s = min(1.0, settings.network_node_timeout_s / 2)
        self.nodes = [RemoteNode(endpoint, probe_s) for endpoint in endpoints]
        self.name = "network"
        self.max_pairs = settings.batch_size
        self.lock = threading.Lock()
        self.waiting: deque[Request] = deque()
        self.failure = ""
        self._numbers = itertools.count()
        self._closing = threading.Event()
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def device(self) -> str:
        parts = [f"{n.info.name} ({n.info.engine}, {n.info.instances} {n.info.kind} instance(s))" if n.info else
                 n.endpoint for n in self.nodes]
        return f"network SUT, {len(self.nodes)} node(s): " + ", ".join(parts)

    def load(self, split: Split) -> None:
        """Wait for every node's readiness, read what each serves and refuse a node that does not match."""
        super().load(split)
        infos = [node.wait_ready(self.settings.triton_startup_timeout_s) for node in self.nodes]
        for node in self.nodes:
            self._check(node)
        if len({info.name for info in infos}) != len(infos):
            raise UserError("network SUT: two nodes have the same name; give each `dlrm-bench serve` its own "
                            "--node-name")
        self.name = ",".join(sorted({info.engine for info in infos}))
        self.max_pairs = min(info.max_batch_pairs for info in infos)
        self._watchdog = threading.Thread(target=self._watch, name="network-watchdog", daemon=True)
        self._watchdog.start()
        print(f"network: {self.device}; up to {self.max_pairs:,} pairs per request", flush=True)

    def _check(self, node: RemoteNode) -> None:
        info: NodeInfo = node.info  # type: ignore[assignment]
        if not info.name:
            raise UserError(f"network SUT {node.label} does not name itself: start it with `dlrm-bench serve`")
        if info.inputs != self.inputs:
            raise UserError(f"network SUT {node.label} takes '{info.inputs}' requests, but --sut {self.mode} sends "
                            f"'{self.inputs}': start it with `dlrm-bench serve --inputs {self.inputs}`")
        if info.dataset_fingerprint != self.meta.fingerprint:
            raise UserError(f"network SUT {node.label} serves dataset fingerprint {info.dataset_fingerprint or '?'}"
                            f", but this node's dataset {self.meta.name} ({self.meta.directory}) is "
                            f"{self.meta.fingerprint}: start the node on the same preprocessed data")
        if self.local_model and info.model_identity != self.local_model:
            raise UserError(f"network SUT {node.label} serves model {info.model_identity or '?'}, but this node's "
                            f"model is {self.local_model}: every node must serve the model scored here")

    def warmup(self) -> None:
        """One request of one sample and one of a full request to each node, before LoadGen starts: every node
        answers, and its engine has compiled what the run will use."""
        assert self.split is not None
        for node in self.nodes:
            for pairs in sorted({1, min(self.max_pairs, len(self.split))}):
                request = Request(-1, np.array([0]), np.array([pairs]), pairs, Future())
                try:
                    node.client.infer(wire.MODEL_NAME, self._inputs(request),
                                      client_timeout=self.settings.triton_request_timeout_s)
                except Exception as exc:
                    raise UserError(f"network SUT {node.label} failed its first request: {exc}") from None

    def close(self) -> None:
        self._closing.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        for node in self.nodes:
            node.close()

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "device": self.device, "sut": self.mode,
                "division": "network" if self.mode == "network" else "open", "inputs": self.inputs,
                "endpoints": [node.endpoint for node in self.nodes], "max_request_pairs": self.max_pairs,
                "nodes": [node.describe() for node in self.nodes]}

    def sut_name(self) -> str:
        """LoadGen's SUT name: one round trip to each node that is up, its names joined."""
        names = []
        for node in [n for n in self.nodes if n.alive]:
            try:
                names.append(node.read_info().name)
            except Exception as exc:  # the node went away: it is down, its requests go elsewhere
                self._node_down(node, f"no answer to the name request ({str(exc).splitlines()[0][:120]})")
        return "dlrm-bench Network SUT: " + (", ".join(names) or "no node answered")

    # ------------------------------------------------------------------ requests
    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        raise UserError("the network SUT answers pair ranges of the bound split (predict_ranges)")

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        """One request per at most max_pairs pairs (a LoadGen sample is never split unless larger than that)."""
        futures = [self._submit(s, e) for s, e in chunk_ranges(starts, ends, self.max_pairs)]
        if not futures:
            empty: Future[np.ndarray] = Future()
            empty.set_result(np.zeros(0, dtype=np.float32))
            return empty
        return join_futures(futures)

    def _submit(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        request = Request(next(self._numbers), starts, ends, int((ends - starts).sum()), Future())
        with self.lock:
            failure = self.failure
            if not failure:
                self.waiting.append(request)
        if failure:
            request.future.set_exception(NetworkSUTFailed(failure))
        else:
            self._pump()
        return request.future

    def _room(self, node: RemoteNode) -> bool:
        limit = self.settings.network_inflight * node.info.instances * self.max_pairs  # type: ignore[union-attr]
        return node.alive and (not node.outstanding or node.outstanding_pairs < limit)

    def _pump(self) -> None:
        """Send waiting requests, in order, each to the node with room and the fewest pairs outstanding per instance
        (ties: the one sent the fewest requests)."""
        while True:
            with self.lock:
                ready = [n for n in self.nodes if self._room(n)]
                if not self.waiting or not ready:
                    return
                node = min(ready, key=lambda n: (n.outstanding_pairs / n.info.instances, n.sent))  # type: ignore
                request = self.waiting.popleft()
                request.node, request.attempt = node, request.attempt + 1
                node.sent += 1
                node.outstanding[request.number] = request
                node.outstanding_pairs += request.pairs
            self._send(node, request)

    def _inputs(self, request: Request) -> list[Any]:
        """The request's tensors: the QSL's rows as they are held (network) or its row ranges (network_ranges)."""
        import tritonclient.grpc as grpcclient

        def tensor(name: str, array: np.ndarray, dtype: str) -> Any:
            item = grpcclient.InferInput(name, list(array.shape), dtype)
            item.set_data_from_numpy(array)
            return item

        if self.inputs == "ranges":
            ranges = np.stack([request.starts, request.ends], axis=1).astype(np.int64)[None]
            return [tensor(wire.ROW_RANGES, ranges, "INT64")]
        assert self.split is not None
        span = contiguous_span(request.starts, request.ends)
        rows: Any = slice(*span) if span is not None else ranges_to_rows(request.starts, request.ends)
        return [tensor(wire.NUMERIC, np.ascontiguousarray(self.split.numeric[rows], dtype=np.float32), "FP32"),
                tensor(wire.CATEGORICAL, np.ascontiguousarray(self.split.categorical[rows], dtype=np.int32), "INT32")]

    def _send(self, node: RemoteNode, request: Request) -> None:
        attempt = request.attempt

        def callback(result: Any, error: Any) -> None:
            self._answered(node, request, attempt, result, error)

        try:
            request.inputs = request.inputs or self._inputs(request)
            node.send(request.inputs, callback, str(request.number), self.settings.triton_request_timeout_s)
        except Exception as exc:
            self._answered(node, request, attempt, None, exc)

    def _answered(self, node: RemoteNode, request: Request, attempt: int, result: Any, error: Any) -> None:
        with self.lock:
            current = request.node is node and request.attempt == attempt and not request.future.done()
            transport = error is not None and is_transport_error(error)
            if current and not transport:
                del node.outstanding[request.number]
                node.outstanding_pairs -= request.pairs
                node.last_ok = time.monotonic()
                if error is None:
                    node.requests += 1
                    node.pairs += request.pairs
        if not current:  # an answer to a request that was re-sent elsewhere: it was answered (or will be) there
            return
        if transport:
            self._node_down(node, f"a request failed: {str(error).splitlines()[0][:200]}")
            return
        if error is not None:
            request.future.set_exception(UserError(f"network SUT {node.label} failed a request: {error}"))
        else:
            values = result.as_numpy(wire.PREDICTIONS)
            if values is None or values.size != request.pairs:
                got = "no" if values is None else values.size
                request.future.set_exception(UserError(f"network SUT {node.label} returned {got} predictions "
                                                       f"for {request.pairs} pairs"))
            else:
                request.future.set_result(np.ascontiguousarray(values.reshape(-1), dtype=np.float32))
        self._pump()

    # ------------------------------------------------------------------ faults
    def _watch(self) -> None:
        """Health checks: a node that fails them for network_node_timeout_s is down."""
        while not self._closing.wait(PROBE_INTERVAL_S):
            for node in [n for n in self.nodes if n.alive]:
                if node.probe():
                    node.last_ok = time.monotonic()
                    continue
                silent = time.monotonic() - node.last_ok
                if silent > self.settings.network_node_timeout_s:
                    self._node_down(node, f"no answer to health checks for {silent:.1f} s")

    def _node_down(self, node: RemoteNode, reason: str) -> None:
        """Mark `node` down; its outstanding requests go back to the head of the queue (or fail: no node left)."""
        doomed: list[Request] = []
        with self.lock:
            if not node.alive or self._closing.is_set():
                return
            node.alive, node.failure = False, reason
            moved = sorted(node.outstanding.values(), key=lambda r: r.number)
            node.outstanding, node.outstanding_pairs = {}, 0
            node.failed_over_requests += len(moved)
            node.failed_over_pairs += sum(r.pairs for r in moved)
            for request in reversed(moved):
                request.node = None
                self.waiting.appendleft(request)
            remaining = [n for n in self.nodes if n.alive]
            if not remaining:
                self.failure = "every node of the network SUT is down: " + "; ".join(
                    f"{n.label}: {n.failure}" for n in self.nodes)
                doomed, self.waiting = list(self.waiting), deque()
        where = f"go to the {len(remaining)} remaining node(s)" if remaining else "cannot be answered"
        print(f"network: {node.label} is down ({reason}); its {len(moved)} outstanding request(s) "
              f"({sum(r.pairs for r in moved):,} pairs) {where}", file=sys.stderr, flush=True)
        for request in doomed:
            request.future.set_exception(NetworkSUTFailed(self.failure))
        threading.Thread(target=node.close, name="network-close", daemon=True).start()
        self._pump()


def create_network_engine(settings: Settings, meta: DatasetMeta, model_path: Path | None) -> NetworkEngine:
    """The network SUT of settings `sut` and `network_endpoints` (a UserError when no endpoint is given)."""
    if not settings.network_endpoints:
        raise UserError(f"--sut {settings.sut} needs the nodes: --endpoints HOST:PORT,HOST:PORT (or the setting "
                        f"network_endpoints in config.json)")
    return NetworkEngine(parse_endpoints(settings.network_endpoints), settings.sut, meta, model_path, settings)
