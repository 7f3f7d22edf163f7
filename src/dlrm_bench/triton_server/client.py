"""The harness's view of a Triton-served engine: an `Engine` whose batches go over gRPC to a tritonserver it owns.

`load(split)` writes the model repository, starts the server on a free loopback port and waits for the model;
`predict_ranges_async` sends one request per batch the SUT hands over (several users' pairs: ranges, or the
gathered rows) with `async_infer` and resolves a Future from the gRPC callback; `close()` stops the server. So
the in-process SUTs (harness/sut.py) drive Triton unchanged: the harness still does not know what it drives.

A watchdog polls the server process and its Python-backend stubs (a dead stub may leave tritonserver up, its
requests unanswered): when one dies it says so on stderr, fails every request in flight with `TritonServerDied`,
kills what is left of the server's process group, and every later batch fails at once with the same message
(LoadGen cannot be stopped early, so the run ends normally and then fails with it).
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from dlrm_bench.criteo.dataset import DatasetMeta, Split
from dlrm_bench.engines.base import Engine, chunk_ranges, contiguous_span, join_futures, ranges_to_rows
from dlrm_bench.errors import UserError
from dlrm_bench.settings import Settings
from dlrm_bench.triton_server import protocol as wire
from dlrm_bench.triton_server.output_regions import OutputRegions, Region
from dlrm_bench.triton_server.repository import ServingSpec, spec_from_settings, trace_dir, write_repository
from dlrm_bench.triton_server.server import ServerOptions, TritonServer, describe_exit, process_end
from dlrm_bench.triton_server.trace import RequestTrace

DEATH_GRACE_S = 2.0
"""After a lost connection, how long to wait for the server process to be seen exiting before blaming gRPC."""
CONNECTION_ERRORS = ("UNAVAILABLE", "CANCELLED", "SOCKET CLOSED", "CONNECTION RESET", "FAILED TO CONNECT")
WATCH_INTERVAL_S = 0.1
STOP_GRACE_S = 2.0
"""How long a server whose stub or process died gets to exit on SIGTERM before SIGKILL."""


class TritonServerDied(UserError):
    """The tritonserver process or one of its model stubs died: every request in flight and after fails."""


def options_from_settings(settings: Settings) -> ServerOptions:
    """Server options of a benchmark run: gRPC only, on loopback; triton_grpc_port (0 = any free port; a busy
    requested port is replaced by a free one, said on stdout), triton_startup_timeout_s."""
    return ServerOptions(grpc_port=settings.triton_grpc_port, startup_timeout_s=settings.triton_startup_timeout_s,
                         log_verbose=settings.triton_log_verbose)


def start_server(spec: ServingSpec, workdir: Path, options: ServerOptions) -> TritonServer:
    """Write the repository under `workdir` and start a server for it; the server is stopped on any error."""
    repository = write_repository(spec, Path(workdir) / "repository")
    server = TritonServer(repository, workdir, options)
    try:
        return server.start(wire.MODEL_NAME)
    except BaseException:
        server.stop()
        raise


def read_instance_info(info_dir: Path) -> list[dict[str, Any]]:
    infos = []
    for path in sorted(Path(info_dir).glob(wire.INSTANCE_INFO.format(index="*"))):
        try:
            infos.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return infos


class TritonEngine(Engine):
    """Engine `engine_name`, served by a tritonserver this object starts (in `load`) and stops (in `close`)."""

    def __init__(self, engine_name: str, model_path: Path, meta: DatasetMeta, settings: Settings,
                 workdir: Path, options: ServerOptions | None = None) -> None:
        super().__init__()
        self.name = engine_name
        self.model_path = Path(model_path)
        self.meta = meta
        self.settings = settings
        self.workdir = Path(workdir)
        self.options = options or options_from_settings(self.settings)
        self.spec: ServingSpec | None = None
        self.server: TritonServer | None = None
        self.client: Any = None
        self.instances: list[dict[str, Any]] = []
        self.failure: str | None = None
        self.stubs: list[int] = []
        self._pending: dict[str, Future[np.ndarray]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.timeout_s = settings.triton_request_timeout_s
        self.trace_dir = trace_dir(self.workdir) if settings.triton_trace else None
        self.trace = RequestTrace(self.trace_dir / "client.jsonl" if self.trace_dir else None)
        self._request_ids = itertools.count()
        self.regions: OutputRegions | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def device(self) -> str:
        remote = self.instances[0]["device"] if self.instances else "?"
        where = self.server.grpc_url if self.server else "not started"
        return f"{remote} (Triton Inference Server, gRPC {where})"

    def load(self, split: Split) -> None:
        """Start the server for `split` (the server opens the same files) and connect."""
        import tritonclient.grpc as grpcclient

        super().load(split)
        self.spec = spec_from_settings(self.name, self.model_path, self.meta.directory, split.directory,
                                       self.settings, self.workdir / "instances")
        print(f"triton: starting tritonserver ({self.spec.inputs} requests, {self.spec.instances} "
              f"{self.spec.kind.upper()} instance(s)); log {self.workdir / 'server.log'}", flush=True)
        self.server = start_server(self.spec, self.workdir, self.options)
        self.client = grpcclient.InferenceServerClient(self.server.grpc_url)
        if self.settings.triton_output_shm:
            count = self.settings.inflight_batches + 2
            self.regions = OutputRegions(self.client, count, 4 * self.spec.max_batch_pairs)
        self.instances = read_instance_info(Path(self.spec.info_dir))
        self.stubs = self.server.stub_pids()
        print(f"triton: model '{wire.MODEL_NAME}' ready on gRPC {self.server.grpc_url} "
              f"(pid {self.server.pid})", flush=True)
        self._watchdog = threading.Thread(target=self._watch, name="triton-watchdog", daemon=True)
        self._watchdog.start()

    def warmup(self) -> None:
        """One small request end to end, so a broken model fails before LoadGen starts."""
        if self.split is None or len(self.split) == 0:
            return
        end = min(len(self.split), 8)
        try:
            self.predict_ranges_async(np.array([0]), np.array([end])).result(timeout=self.timeout_s)
        except BaseException:
            self.close()  # the caller never gets an engine to close
            raise

    def close(self) -> None:
        self._closing.set()
        if self.regions is not None:
            self.regions.close()
            self.regions = None
        if self.client is not None:
            try:
                self.client.close()
            except Exception:
                pass
            self.client = None
        if self.server is not None:
            self.server.stop(STOP_GRACE_S if self.failure else None)
        if self._watchdog is not None:
            self._watchdog.join(timeout=5)
        self.trace.close()

    def describe(self) -> dict[str, Any]:
        server = self.server
        return {"engine": self.name, "device": self.device, "served_by": "triton",
                "inputs": self.spec.inputs if self.spec else None,
                "grpc_url": server.grpc_url if server else None,
                "server_log": str(server.log_path) if server else None,
                "triton_binary": str(server.install.binary) if server else None,
                "instances": self.instances}

    # ------------------------------------------------------------------ failure
    def _watch(self) -> None:
        server = self.server
        while server is not None and not self._closing.wait(WATCH_INTERVAL_S):
            self._fail(self._death())
            if self.failure:
                server.stop(STOP_GRACE_S)  # a stub's server is useless now; a dead server's stubs are orphans
                return

    def _death(self) -> str | None:
        """What of the server died, if anything (None while closing)."""
        server = self.server
        if server is None or self._closing.is_set():
            return None
        if not server.alive():
            return f"tritonserver (pid {server.pid}) {describe_exit(server.returncode())}"
        for pid in self.stubs:
            end = process_end(pid)
            if end:
                return f"Triton Inference Server model stub (pid {pid}) died ({end})"
        return None

    def _fail(self, death: str | None) -> None:
        """The first death found: said on stderr; every request in flight fails with it, and every later one."""
        with self._lock:
            if death is None or self.failure is not None:
                return
            pending, self._pending = self._pending, {}
            log = self.server.log_path if self.server else "?"
            self.failure = f"{death} while {len(pending)} requests were in flight; its log: {log}"
        print(f"triton: error: {self.failure}", file=sys.stderr, flush=True)
        for future in pending.values():
            future.set_exception(TritonServerDied(self.failure))

    def _explain(self, error: Exception) -> Exception:
        """A gRPC error -> the server's or a stub's death if that is what it was, else the error with context."""
        server = self.server
        connection_lost = any(m in str(error).upper() for m in CONNECTION_ERRORS)
        deadline = time.monotonic() + (DEATH_GRACE_S if connection_lost else 0.0)
        while server is not None and server.alive() and time.monotonic() < deadline and not self._closing.is_set():
            time.sleep(0.05)
        self._fail(self._death())
        if self.failure:
            return TritonServerDied(self.failure)
        return UserError(f"Triton request failed: {error}")

    # ------------------------------------------------------------------ requests
    def _inputs(self, starts: np.ndarray, ends: np.ndarray) -> list[Any]:
        import tritonclient.grpc as grpcclient

        def tensor(name: str, array: np.ndarray, dtype: str) -> Any:
            item = grpcclient.InferInput(name, list(array.shape), dtype)
            item.set_data_from_numpy(array)
            return item

        if self.spec is not None and self.spec.inputs == "ranges":
            ranges = np.stack([starts, ends], axis=1).astype(np.int64)[None]
            return [tensor(wire.ROW_RANGES, ranges, "INT64")]
        numeric, categorical = self._gather(starts, ends)
        return [tensor(wire.NUMERIC, numeric, "FP32"), tensor(wire.CATEGORICAL, categorical, "INT32")]

    def _gather(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.split is not None
        span = contiguous_span(starts, ends)
        if span is not None:
            lo, hi = span
            return (np.ascontiguousarray(self.split.numeric[lo:hi], dtype=np.float32),
                    np.ascontiguousarray(self.split.categorical[lo:hi], dtype=np.int32))
        rows = ranges_to_rows(starts, ends)
        return (np.ascontiguousarray(self.split.numeric[rows], dtype=np.float32),
                np.ascontiguousarray(self.split.categorical[rows], dtype=np.int32))

    def _send(self, inputs: list[Any], pairs: int) -> "Future[np.ndarray]":
        import tritonclient.grpc as grpcclient

        future: Future[np.ndarray] = Future()
        request_id = str(next(self._request_ids))

        region = self.regions.take(4 * pairs) if self.regions is not None and pairs else None
        output = grpcclient.InferRequestedOutput(wire.PREDICTIONS)
        if region is not None:
            output.set_shared_memory(region.name, 4 * pairs)

        def callback(result: Any, error: Exception | None) -> None:
            self.trace.finish(request_id, "received")
            with self._lock:
                mine = self._pending.pop(request_id, None) is not None
            if not mine:  # already failed by the watchdog
                self._give_back(region)
                return
            if error is not None:
                self._give_back(region)
                future.set_exception(self._explain(error))
                return
            values = self._predictions(result, region, pairs)
            if values is None or values.size != pairs:
                got = "no" if values is None else values.size
                future.set_exception(UserError(f"Triton returned {got} predictions for {pairs} pairs"))
                return
            future.set_result(np.ascontiguousarray(values.reshape(-1), dtype=np.float32))

        with self._lock:
            sending = not self.failure and self.client is not None
            if sending:
                self._pending[request_id] = future
        if not sending:
            self._give_back(region)
            future.set_exception(TritonServerDied(self.failure) if self.failure else
                                 RuntimeError("Triton engine: load() a split before predicting"))
            return future
        try:
            self.trace.mark(request_id, "sent")
            self.client.async_infer(wire.MODEL_NAME, inputs, callback, request_id=request_id, outputs=[output],
                                    client_timeout=self.timeout_s)
        except Exception as exc:
            self._give_back(region)
            with self._lock:
                mine = self._pending.pop(request_id, None) is not None
            if mine:
                future.set_exception(self._explain(exc))
        return future

    def _predictions(self, result: Any, region: Region | None, pairs: int) -> np.ndarray | None:
        """The response's predictions: read from the shared-memory region the server wrote (then freed for the
        next request), or from the message."""
        if region is None:
            return result.as_numpy(wire.PREDICTIONS)
        try:
            return region.read(pairs) if result.get_output(wire.PREDICTIONS) is not None else None
        finally:
            self._give_back(region)

    def _give_back(self, region: Region | None) -> None:
        if region is not None and self.regions is not None:
            self.regions.give_back(region)

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        """One request per at most `batch_size` pairs (the SUTs already cut batches that size)."""
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        limit = self.spec.max_batch_pairs if self.spec else self.settings.batch_size
        futures = [self._send(self._inputs(s, e), int((e - s).sum())) for s, e in chunk_ranges(starts, ends, limit)]
        if not futures:
            empty: Future[np.ndarray] = Future()
            empty.set_result(np.zeros(0, dtype=np.float32))
            return empty
        return join_futures(futures)

    def predict_ranges(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        return self.predict_ranges_async(starts, ends).result()

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Raw rows: only a 'rows' server takes them (a 'ranges' server reads its own dataset)."""
        import tritonclient.grpc as grpcclient

        if self.spec is None or self.spec.inputs != "rows":
            raise UserError("this Triton server takes row ranges of its dataset, not raw rows "
                            "(set triton_inputs to 'rows' to send features)")
        numeric = np.ascontiguousarray(numeric, dtype=np.float32)
        categorical = np.ascontiguousarray(categorical, dtype=np.int32)
        inputs = []
        for name, array, dtype in ((wire.NUMERIC, numeric, "FP32"), (wire.CATEGORICAL, categorical, "INT32")):
            item = grpcclient.InferInput(name, list(array.shape), dtype)
            item.set_data_from_numpy(array)
            inputs.append(item)
        return self._send(inputs, numeric.shape[0]).result()


def create_served_engine(name: str, model_path: Path, meta: DatasetMeta, settings: Settings | None,
                         workdir: Path) -> TritonEngine:
    """Engine `name` behind a Triton Inference Server; the server starts in `load()` and stops in `close()`."""
    return TritonEngine(name, model_path, meta, settings or Settings(), workdir)
