"""The served model, inside Triton's Python stub: requests -> engine batches -> one response per request.

`execute` takes the requests Triton's dynamic batcher grouped, packs them whole into engine batches of at most
`max_batch_pairs` pairs (a larger request gets batches of its own: `plan_batches`) and keeps up to `inflight`
batches in the engine (its async path, so a CUDA engine overlaps them). A synchronous engine (reference, cpu) has
answered by the time execute() ends: the responses are its return value. Otherwise execute() returns at once and
each request is answered through its response sender as soon as the batches holding its own pairs finish (from
the engine's completion thread), not when the whole group has; blocking on the in-flight limit is the
back-pressure that lets Triton's queue grow and its batcher merge more requests.

Tensors cross the stub boundary through DLPack: inputs with `np.from_dlpack`, outputs from a torch tensor with
`Tensor.from_dlpack`. The stub's own numpy bridge (`as_numpy`, `Tensor(name, ndarray)`) reads numpy 2 arrays
wrongly (wrong rows in, empty outputs out: the pytriton 0.7 / Triton 2.51 stubs were built against numpy 1), and
a numpy DLPack capsule as output works but makes the stub log a PyCapsule traceback per response.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrm_bench.atomic import save_json
from dlrm_bench.criteo.dataset import load_meta, open_split
from dlrm_bench.engines import create_engine
from dlrm_bench.engines.base import chunk_ranges
from dlrm_bench.interpreter import QuietInterpreter
from dlrm_bench.settings import Settings
from dlrm_bench.triton_server import protocol as wire
from dlrm_bench.triton_server.trace import RequestTrace


class Replies:
    """The responses of one execute() call. Those ready before execute() ends go back as its return value (one
    message to Triton: a synchronous engine pays no extra round trip); if some are not, every response goes
    through its request's response sender (obtained inside execute, as Triton requires), as it becomes ready."""

    def __init__(self, requests: list[Any], pb: Any) -> None:
        self.requests = requests
        self.pb = pb
        self.ready: dict[int, Any] = {}
        self.senders: list[Any] | None = None
        self.lock = threading.Lock()

    def put(self, index: int, response: Any) -> None:
        with self.lock:
            if self.senders is None:
                self.ready[index] = response
                return
        self.senders[index].send(response, flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def finish(self) -> list[Any] | None:
        """At the end of execute(): the responses in request order if all are ready, else None (sent later)."""
        with self.lock:
            if len(self.ready) == len(self.requests):
                return [self.ready[i] for i in range(len(self.requests))]
            self.senders = [request.get_response_sender() for request in self.requests]
            early, self.ready = self.ready, {}
        for index, response in early.items():
            self.senders[index].send(response, flags=self.pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None


@dataclass
class Job:
    """One request: where its response goes and its pairs (ranges [k, 2] or rows (numeric, categorical)); the
    predictions of its pieces as their batches finish."""

    replies: Replies
    index: int
    pairs: int
    ranges: np.ndarray | None = None
    numeric: np.ndarray | None = None
    categorical: np.ndarray | None = None
    parts: list[np.ndarray | None] = field(default_factory=list)
    pending: int = 0
    error: str = ""
    request_id: str = ""


@dataclass
class Piece:
    """Pairs of one job inside one engine batch: its part number, and its ranges [k, 2] or rows [lo, hi)."""

    job: Job
    part: int
    pairs: int
    ranges: np.ndarray | None = None
    lo: int = 0
    hi: int = 0


def plan_batches(jobs: list[Job], max_pairs: int) -> list[list[Piece]]:
    """Engine batches of at most `max_pairs` pairs: jobs packed whole, in order; a job larger than that gets
    batches of its own (cut into pieces of at most `max_pairs`). So a request waits only for the batches that
    hold its own pairs, never for the rest of what Triton's batcher grouped with it. Sets each job's `parts`."""
    batches: list[list[Piece]] = []
    current: list[Piece] = []
    current_pairs = 0
    for job in jobs:
        if current and current_pairs + job.pairs > max_pairs:
            batches.append(current)
            current, current_pairs = [], 0
        if job.pairs > max_pairs:
            batches.extend([piece] for piece in _split(job, max_pairs))
            continue
        job.parts, job.pending = [None], 1
        current.append(Piece(job, 0, job.pairs, ranges=job.ranges, lo=0, hi=job.pairs))
        current_pairs += job.pairs
    if current:
        batches.append(current)
    return batches


def _split(job: Job, max_pairs: int) -> list[Piece]:
    if job.ranges is not None:
        chunks = chunk_ranges(job.ranges[:, 0], job.ranges[:, 1], max_pairs)
        pieces = [Piece(job, k, int((e - s).sum()), ranges=np.stack([s, e], axis=1)) for k, (s, e) in enumerate(chunks)]
    else:
        pieces = [Piece(job, k, min(max_pairs, job.pairs - lo), lo=lo, hi=min(job.pairs, lo + max_pairs))
                  for k, lo in enumerate(range(0, job.pairs, max_pairs))]
    job.parts, job.pending = [None] * len(pieces), len(pieces)
    return pieces


def _joined(parts: list[np.ndarray | None]) -> np.ndarray:
    """A job's predictions from its pieces, in order; a job in one piece (the usual case) is not copied."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)  # type: ignore[return-value,arg-type]


class ServedModel:
    """The project's engine behind Triton (config: serving.json, written by triton_server/repository.py)."""

    def __init__(self, config: dict[str, Any], pb: Any, instance_name: str) -> None:
        self.pb = pb
        self.inputs = config["inputs"]
        self.max_pairs = int(config["max_batch_pairs"])
        self.slots = threading.BoundedSemaphore(int(config["inflight"]))
        self.lock = threading.Lock()
        trace_dir = config.get("trace_dir")
        self.trace = RequestTrace(Path(trace_dir) / f"stub-{instance_name}.jsonl" if trace_dir else None)
        meta = load_meta(Path(config["dataset_dir"]))
        settings = Settings.from_dict(config["settings"], f"{config['info_dir']}/../{wire.SERVING_FILE}")
        self.engine = create_engine(config["engine"], Path(config["model_path"]), meta, settings)
        self.split = open_split(Path(config["split_dir"])) if config.get("split_dir") else None
        if self.split is not None:
            self.engine.load(self.split)
        self.engine.warmup()
        self.quiet = QuietInterpreter(settings.gil_switch_interval_ms).__enter__()
        self.rows_pool = ThreadPoolExecutor(1, thread_name_prefix="rows") if self.inputs == "rows" else None
        info = {"instance": instance_name, "engine": self.engine.describe(), "device": self.engine.device,
                "inputs": self.inputs, "pid": os.getpid(), "torch_threads": torch.get_num_threads(),
                "cpu_affinity": sorted(os.sched_getaffinity(0))}
        save_json(Path(config["info_dir"]) / wire.INSTANCE_INFO.format(index=instance_name), info)

    # ------------------------------------------------------------------ requests
    def _tensor(self, request: Any, name: str) -> np.ndarray:
        tensor = self.pb.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"input {name} missing (this server takes '{self.inputs}' requests)")
        return np.array(np.from_dlpack(tensor))  # a copy: the request's memory goes once execute() returns

    def _parse(self, request: Any, replies: Replies, index: int) -> Job:
        request_id = request.request_id() if self.trace.enabled else ""
        self.trace.mark(request_id, "execute")
        if self.inputs == "ranges":
            ranges = self._tensor(request, wire.ROW_RANGES).astype(np.int64, copy=False).reshape(-1, 2)
            self._check_ranges(ranges)
            job = Job(replies, index, int((ranges[:, 1] - ranges[:, 0]).sum()), ranges=ranges)
        else:
            numeric = self._tensor(request, wire.NUMERIC)
            categorical = self._tensor(request, wire.CATEGORICAL)
            job = Job(replies, index, int(numeric.shape[0]), numeric=numeric, categorical=categorical)
        job.request_id = request_id
        return job

    def _check_ranges(self, ranges: np.ndarray) -> None:
        rows = len(self.split) if self.split is not None else 0
        starts, ends = ranges[:, 0], ranges[:, 1]
        if ranges.size and (starts.min() < 0 or ends.max() > rows or np.any(ends <= starts)):
            raise ValueError(f"{wire.ROW_RANGES} must hold [start, end) with 0 <= start < end <= {rows} "
                             f"(the server's test split)")

    def execute(self, requests: list[Any]) -> list[Any] | None:
        replies = Replies(requests, self.pb)
        jobs = []
        for index, request in enumerate(requests):
            try:
                jobs.append(self._parse(request, replies, index))
            except Exception as exc:  # a malformed request fails alone
                replies.put(index, self._error(f"{type(exc).__name__}: {exc}"))
        if jobs:
            try:
                self._submit(jobs)
            except Exception as exc:  # nothing was launched: every job fails here
                for job in jobs:
                    replies.put(job.index, self._error(f"{type(exc).__name__}: {exc}"))
        return replies.finish()

    # ------------------------------------------------------------------ engine
    def _submit(self, jobs: list[Job]) -> None:
        for job in [job for job in jobs if job.pairs == 0]:  # requests without pairs
            self._answer(job, np.zeros(0, dtype=np.float32), "")
        for batch in plan_batches([job for job in jobs if job.pairs > 0], self.max_pairs):
            self.slots.acquire()
            try:
                future = self._launch(batch)
            except Exception as exc:  # this batch fails; its jobs are answered with the error
                future = Future()
                future.set_exception(exc)
            future.add_done_callback(lambda f, b=batch: self._finished(b, f))

    def _launch(self, batch: list[Piece]) -> "Future[np.ndarray]":
        for piece in batch:
            self.trace.mark(piece.job.request_id, "launch", first=True)
        if self.inputs == "ranges":
            ranges = np.concatenate([piece.ranges for piece in batch])  # type: ignore[misc]
            return self.engine.predict_ranges_async(ranges[:, 0], ranges[:, 1])
        numeric = np.concatenate([piece.job.numeric[piece.lo:piece.hi] for piece in batch])  # type: ignore[index]
        categorical = np.concatenate([piece.job.categorical[piece.lo:piece.hi]  # type: ignore[index]
                                      for piece in batch])
        return self.rows_pool.submit(self.engine.predict, numeric, categorical)  # type: ignore[union-attr]

    def _finished(self, batch: list[Piece], future: "Future[np.ndarray]") -> None:
        """One batch done: hand each piece its predictions; answer each job whose last piece this was."""
        self.slots.release()
        predictions, error = None, ""
        try:
            predictions = np.asarray(future.result(), dtype=np.float32).reshape(-1)
            if predictions.shape[0] != sum(piece.pairs for piece in batch):
                raise RuntimeError(f"engine returned {predictions.shape[0]} predictions for "
                                   f"{sum(piece.pairs for piece in batch)} pairs")
        except BaseException as exc:  # reported to every request with pairs in this batch
            predictions, error = None, f"{type(exc).__name__}: {exc}"
        lo = 0
        for piece in batch:
            job = piece.job
            with self.lock:
                job.parts[piece.part] = None if predictions is None else predictions[lo:lo + piece.pairs]
                job.error = job.error or error
                job.pending -= 1
                complete = job.pending == 0
            lo += piece.pairs
            if complete:
                self.trace.mark(job.request_id, "engine_done")
                merged = None if job.error else _joined(job.parts)
                self._answer(job, merged, job.error)

    # ------------------------------------------------------------------ responses
    def _answer(self, job: Job, predictions: np.ndarray | None, error: str) -> None:
        if predictions is None:
            job.replies.put(job.index, self._error(error or "engine returned no predictions"))
        else:
            values = np.ascontiguousarray(predictions)
            shaped = values.reshape(1, -1) if self.inputs == "ranges" else values.reshape(-1, 1)
            tensor = self.pb.Tensor.from_dlpack(wire.PREDICTIONS, torch.from_numpy(shaped))
            job.replies.put(job.index, self.pb.InferenceResponse(output_tensors=[tensor]))
        self.trace.finish(job.request_id, "answered")

    def _error(self, message: str) -> Any:
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(message))

    def close(self) -> None:
        if self.rows_pool is not None:
            self.rows_pool.shutdown(wait=True)
        self.engine.close()
        self.trace.close()
        self.quiet.__exit__()
