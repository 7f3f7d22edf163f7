"""The served model, inside Triton's Python stub: requests -> engine batches -> one response per request.

`execute` takes the requests Triton's dynamic batcher grouped, merges their pairs, cuts them into engine batches
of at most `max_batch_pairs` pairs and keeps up to `inflight` batches in the engine (its async path, so a CUDA
engine overlaps them). A synchronous engine (reference, cpu) has answered by the time execute() ends: the
responses are its return value. Otherwise execute() returns at once and each request is answered through its
response sender when its group's last batch finishes (from the engine's completion thread); blocking on the
in-flight limit is the back-pressure that lets Triton's queue grow and its batcher merge more requests.

Tensors cross the stub boundary through DLPack: inputs with `np.from_dlpack`, outputs from a torch tensor with
`Tensor.from_dlpack`. The stub's own numpy bridge (`as_numpy`, `Tensor(name, ndarray)`) reads numpy 2 arrays
wrongly (wrong rows in, empty outputs out: the pytriton 0.7 / Triton 2.51 stubs were built against numpy 1), and
a numpy DLPack capsule as output works but makes the stub log a PyCapsule traceback per response.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from dlrm_bench.atomic import save_json
from dlrm_bench.criteo.dataset import load_meta, open_split
from dlrm_bench.engines import create_engine
from dlrm_bench.engines.base import chunk_ranges
from dlrm_bench.interpreter import DEFAULT_SWITCH_INTERVAL_MS, QuietInterpreter
from dlrm_bench.serving import protocol as wire


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
    """One request: where its response goes and its pairs (ranges [k, 2] or rows (numeric, categorical))."""

    replies: Replies
    index: int
    pairs: int
    ranges: np.ndarray | None = None
    numeric: np.ndarray | None = None
    categorical: np.ndarray | None = None


class Group:
    """The batches of one execute(): collects their predictions in order, answers every job when all are in."""

    def __init__(self, jobs: list[Job], batches: int, answer: Callable[[list[Job], np.ndarray | None, str], None]):
        self.jobs = jobs
        self.results: list[np.ndarray | None] = [None] * batches
        self.error = ""
        self.pending = batches
        self.lock = threading.Lock()
        self.answer = answer

    def done(self, index: int, future: "Future[np.ndarray]") -> None:
        result, error = None, ""
        try:
            result = np.asarray(future.result(), dtype=np.float32).reshape(-1)
        except BaseException as exc:  # reported to every client of the group
            error = f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.results[index] = result
            self.error = self.error or error
            self.pending -= 1
            last = self.pending == 0
        if last:
            merged = None if self.error else np.concatenate(self.results)  # type: ignore[arg-type]
            self.answer(self.jobs, merged, self.error)


class ServedModel:
    """The project's engine behind Triton (config: serving.json, written by serving/repository.py)."""

    def __init__(self, config: dict[str, Any], pb: Any, instance_name: str) -> None:
        self.pb = pb
        self.inputs = config["inputs"]
        self.max_pairs = int(config["max_batch_pairs"])
        self.slots = threading.BoundedSemaphore(int(config["inflight"]))
        meta = load_meta(Path(config["dataset_dir"]))
        self.engine = create_engine(config["engine"], Path(config["model_path"]), meta, config["settings"])
        self.split = open_split(Path(config["split_dir"])) if config.get("split_dir") else None
        if self.split is not None:
            self.engine.load(self.split)
        self.engine.warmup()
        self.quiet = QuietInterpreter(float(config["settings"].get("gil_switch_interval_ms",
                                                                 DEFAULT_SWITCH_INTERVAL_MS))).__enter__()
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
        if self.inputs == "ranges":
            ranges = self._tensor(request, wire.ROW_RANGES).astype(np.int64, copy=False).reshape(-1, 2)
            self._check_ranges(ranges)
            return Job(replies, index, int((ranges[:, 1] - ranges[:, 0]).sum()), ranges=ranges)
        numeric = self._tensor(request, wire.NUMERIC)
        categorical = self._tensor(request, wire.CATEGORICAL)
        return Job(replies, index, int(numeric.shape[0]), numeric=numeric, categorical=categorical)

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
        if self.inputs == "ranges":
            ranges = np.concatenate([job.ranges for job in jobs])  # type: ignore[misc]
            chunks = chunk_ranges(ranges[:, 0], ranges[:, 1], self.max_pairs)
            start = [lambda s=s, e=e: self.engine.predict_ranges_async(s, e) for s, e in chunks]
        else:
            numeric = np.concatenate([job.numeric for job in jobs])  # type: ignore[misc]
            categorical = np.concatenate([job.categorical for job in jobs])  # type: ignore[misc]
            bounds = range(0, numeric.shape[0], self.max_pairs)
            start = [lambda lo=lo: self.rows_pool.submit(  # type: ignore[union-attr]
                self.engine.predict, numeric[lo:lo + self.max_pairs], categorical[lo:lo + self.max_pairs])
                for lo in bounds]
        if not start:  # requests without pairs
            self._answer(jobs, np.zeros(0, dtype=np.float32), "")
            return
        group = Group(jobs, len(start), self._answer)
        for index, launch in enumerate(start):
            self.slots.acquire()
            try:
                future = launch()
            except Exception as exc:  # this batch fails; the group answers every job once all are accounted for
                future = Future()
                future.set_exception(exc)
            future.add_done_callback(lambda f, i=index: self._finished(group, i, f))

    def _finished(self, group: Group, index: int, future: "Future[np.ndarray]") -> None:
        self.slots.release()
        group.done(index, future)

    # ------------------------------------------------------------------ responses
    def _answer(self, jobs: list[Job], predictions: np.ndarray | None, error: str) -> None:
        if predictions is None or predictions.shape[0] != sum(job.pairs for job in jobs):
            got = "no" if predictions is None else str(predictions.shape[0])
            message = error or f"engine returned {got} predictions for {sum(job.pairs for job in jobs)} pairs"
            for job in jobs:
                job.replies.put(job.index, self._error(message))
            return
        lo = 0
        for job in jobs:
            values = np.ascontiguousarray(predictions[lo:lo + job.pairs])
            lo += job.pairs
            shaped = values.reshape(1, -1) if self.inputs == "ranges" else values.reshape(-1, 1)
            tensor = self.pb.Tensor.from_dlpack(wire.PREDICTIONS, torch.from_numpy(shaped))
            job.replies.put(job.index, self.pb.InferenceResponse(output_tensors=[tensor]))

    def _error(self, message: str) -> Any:
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(message))

    def close(self) -> None:
        if self.rows_pool is not None:
            self.rows_pool.shutdown(wait=True)
        self.engine.close()
        self.quiet.__exit__()
