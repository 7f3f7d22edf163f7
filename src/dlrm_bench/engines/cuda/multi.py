"""Several GPUs of one host behind the one Engine interface: one CudaEngine per visible GPU, in this process.

The tables are built once (on the first GPU) and copied device to device to the others; the test set likewise.
Each request goes whole to the GPU with the fewest pairs outstanding, so no GPU idles while another has a queue,
and a Server batch stays on one GPU (its latency is one GPU's). Threads, not processes: LoadGen lives in one
process and the engines' work is asynchronous GPU work issued from Python, so one process with one dispatch path
per GPU (each engine has its own streams, buffers and completion threads) avoids moving every result across
processes.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrm_bench.criteo.dataset import Split
from dlrm_bench.engines.base import Engine
from dlrm_bench.engines.cuda.engine import CudaEngine
from dlrm_bench.quant.artifacts import Int8Model
from dlrm_bench.settings import Settings


class MultiGpuEngine(Engine):
    name = "cuda"

    def __init__(self, model: Int8Model, settings: Settings, gpus: int, frequencies_file: Path | None = None) -> None:
        super().__init__()
        first = CudaEngine(model, settings, frequencies_file=frequencies_file, device_index=0)
        self.engines = [first]
        for i in range(1, gpus):
            with torch.cuda.device(i):
                store = first.store.to(torch.device("cuda", i))
                self.engines.append(CudaEngine(model, settings, store=store, device_index=i))
        self.outstanding = [0] * gpus
        self.lock = threading.Lock()
        self.pads_batches = first.pads_batches
        self.max_batch_pairs = first.max_batch_pairs

    @property
    def device(self) -> str:
        return f"{len(self.engines)} x {torch.cuda.get_device_name(0)}"

    def load(self, split: Split) -> None:
        super().load(split)
        first = self.engines[0]
        first.load(split)
        resident = None
        if first.numeric_dev is not None and first.categorical_dev is not None:
            resident = (first.numeric_dev, first.categorical_dev)
        for engine in self.engines[1:]:
            with torch.cuda.device(engine.dev):
                engine.load(split, resident)

    def _pick(self, pairs: int) -> int:
        with self.lock:
            i = min(range(len(self.engines)), key=self.outstanding.__getitem__)
            self.outstanding[i] += pairs
            return i

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        pairs = int((np.asarray(ends) - np.asarray(starts)).sum())
        i = self._pick(pairs)
        future = self.engines[i].predict_ranges_async(starts, ends)

        def done(_: Future) -> None:
            with self.lock:
                self.outstanding[i] -= pairs

        future.add_done_callback(done)
        return future

    def predict_ranges(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        return self.predict_ranges_async(starts, ends).result()

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return self.engines[0].predict(numeric, categorical)

    def warmup(self) -> None:
        for engine in self.engines:
            with torch.cuda.device(engine.dev):
                engine.warmup()

    def describe(self) -> dict[str, Any]:
        return {**self.engines[0].describe(), "gpus": len(self.engines), "device": self.device}

    def close(self) -> None:
        for engine in self.engines:
            engine.close()
