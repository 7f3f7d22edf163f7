"""The CUDA engine: int8 tables on the GPU, three kernel stages, several batches in flight.

Per batch (at most `gpu_batch_size` pairs): [sample ranges -> pair rows on the GPU if the samples are not
contiguous] -> fused bottom MLP -> gather + interaction -> four top GEMMs (the last one ending in the sigmoid) ->
probabilities D2H into pinned memory. `gpu_num_bundles` bundles (buffers + a CUDA stream each) let batch i+1's
input copies overlap batch i's kernels and batch i-1's copy back; the kernels of every bundle run one batch after
another on one compute stream (batches whose kernels run side by side each take longer: docs/architecture.md);
`complete_threads` threads wait for each bundle's event and hand the results back.

With `cuda_graphs` (and `start_from_device`), warmup records each bundle's pipeline once per size bucket
(`cuda_graph_buckets` sizes evenly up to gpu_batch_size): the row expansion (row_index.py) and the three stages. A
batch then costs the host one copy of its packed sample ranges, one replay of the smallest bucket that holds it
(the pairs past the batch read row 0; their results are not returned) and the copy back.

The kernels of each stage are chosen by settings (settings.py): `bottom_kernel`, `interaction_kernel` (`triton`
or the native library's `cuda` kernels) and `top_gemm` / `top_gemm_first_layer` / `cutlass_final_layer` (Triton
GEMMs or the library's CUTLASS kernels). Where the library is not built or the GPU is not a Hopper, a warning
says so and the Triton kernel runs.
"""

from __future__ import annotations

import queue
import sys
import threading
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch

from dlrm_bench.criteo.dataset import Split
from dlrm_bench.criteo.packing import pack, pack_torch, packing_layout
from dlrm_bench.engines.base import Engine, chunk_ranges, contiguous_span, join_futures, ranges_to_rows
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP
from dlrm_bench.engines.cuda.interaction import Interaction
from dlrm_bench.engines.cuda.kernel_library import KernelsUnavailable
from dlrm_bench.engines.cuda.row_index import expand_rows, pack_ranges, packed_length, search_steps
from dlrm_bench.engines.cuda.table_store import TableStore, build_store
from dlrm_bench.engines.cuda.top_mlp import TopMLP, use_cutlass_hidden_layers
from dlrm_bench.quant.artifacts import Int8Model
from dlrm_bench.quant.recipe import TOP_INPUT_PAD, quantize_numeric
from dlrm_bench.settings import Settings

COPY_ROWS = 1 << 22
"""Rows per host-to-device chunk when uploading arrays."""


def upload_rows(array: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Copy a (memory-mapped) 2-D array to the device in chunks, never holding a second full host copy."""
    out = torch.empty(array.shape, dtype=dtype or torch.from_numpy(np.array(array[:1])).dtype, device=device)
    for lo in range(0, array.shape[0], COPY_ROWS):
        chunk = torch.from_numpy(np.array(array[lo:lo + COPY_ROWS]))
        out[lo:lo + chunk.shape[0]].copy_(chunk)
    return out


def graph_bucket_sizes(max_pairs: int, buckets: int) -> list[int]:
    """`buckets` batch sizes evenly up to max_pairs (rounded up to 128 pairs, a GEMM tile), ascending and
    distinct; the last is max_pairs."""
    buckets = max(1, buckets)
    sizes = {min(max_pairs, -(-max_pairs * i // buckets // 128) * 128) for i in range(1, buckets + 1)}
    return sorted(sizes)


class Bundle:
    """Buffers and a stream for one batch in flight."""

    def __init__(self, device: torch.device, max_pairs: int, widths: list[int], cat_width: int = 26) -> None:
        self.stream = torch.cuda.Stream(device)
        self.top_in = torch.zeros(max_pairs, TOP_INPUT_PAD, dtype=torch.int8, device=device)
        self.hidden = [torch.empty(max_pairs, w, dtype=torch.int8, device=device) for w in widths]
        self.probs = torch.empty(max_pairs, dtype=torch.float32, device=device)
        self.probs_host = torch.empty(max_pairs, dtype=torch.float32, pin_memory=True)
        self.rows = torch.zeros(max_pairs, dtype=torch.int64, device=device)  # always valid row indices
        # a batch's sample ranges in row_index.pack_ranges' layout: one buffer, one contiguous copy over the bus
        self.ranges = torch.empty(packed_length(max_pairs), dtype=torch.int64, device=device)
        self.ranges_host = torch.empty(packed_length(max_pairs), dtype=torch.int64, pin_memory=True)
        self.numeric_host = torch.empty(max_pairs, 13, dtype=torch.int8, pin_memory=True)
        self.categorical_host = torch.empty(max_pairs, cat_width, dtype=torch.int32, pin_memory=True)
        self.numeric = torch.empty(max_pairs, 13, dtype=torch.int8, device=device)
        self.categorical = torch.empty(max_pairs, cat_width, dtype=torch.int32, device=device)
        self.done = torch.cuda.Event()
        self.staged = torch.cuda.Event()  # inputs on the device (the compute stream waits for it)
        self.computed = torch.cuda.Event()  # kernels finished (the copy back waits for it)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}  # pairs computed -> the recorded pipeline


class CudaEngine(Engine):
    name = "cuda"

    def __init__(self, model: Int8Model, settings: Settings | None = None, store: TableStore | None = None,
                 frequencies_file: Path | None = None, device_index: int = 0) -> None:
        """store: the tables already on this engine's GPU (another GPU's copy); else built from `model` with
        `embedding_weights_on_gpu_part` of the rows on the GPU (row_frequencies.bin ranks them)."""
        super().__init__()
        if not torch.cuda.is_available():
            raise RuntimeError("the cuda engine needs a CUDA GPU")
        settings = settings or Settings()
        self.dev = torch.device("cuda", device_index)
        torch.cuda.set_device(self.dev)
        self.max_pairs = settings.gpu_batch_size
        self.max_batch_pairs = self.max_pairs
        self.start_from_device = settings.start_from_device
        qm = model.quantized
        cards = [int(c) for c in np.diff(np.append(model.table_offsets, model.tables.shape[0]))]
        self.store = store or build_store(model.tables, settings.embedding_weights_on_gpu_part, self.dev,
                                          frequencies_file, cards)
        self.tables = self.store.hot
        self.gpu_part = self.store.gpu_part  # kept for describe() after close()
        self.table_bytes_on_gpu = int(self.store.hot.numel())
        self.bottom = self._bottom(qm, settings.bottom_kernel)
        self.packing = packing_layout(cards) if settings.compress_categorical_inputs else None
        self.interaction = self._interaction(qm, torch.from_numpy(model.table_offsets), settings.interaction_kernel,
                                             settings.interaction_pairs_per_warp)
        self.top = TopMLP(qm, self.dev)
        self.cutlass_final_layer = settings.cutlass_final_layer
        self.top_gemm = self._hidden_layer_kernels(settings.top_gemm, settings.top_gemm_first_layer)
        self.bundles: "queue.SimpleQueue[Bundle]" = queue.SimpleQueue()
        for _ in range(settings.gpu_num_bundles):
            self.bundles.put(Bundle(self.dev, self.max_pairs, self.top.widths, 26 if self.packing is None else 16))
        self.completer = ThreadPoolExecutor(settings.complete_threads, thread_name_prefix="cuda-complete")
        self.numeric_dev: torch.Tensor | None = None
        self.categorical_dev: torch.Tensor | None = None
        self.host_inputs: tuple[np.ndarray, np.ndarray] | None = None
        self.staging_threads = settings.staging_threads
        self.staging = ThreadPoolExecutor(self.staging_threads, thread_name_prefix="cuda-stage")
        self.bytes_to_device = 0
        self.lock = threading.Lock()
        self.use_graphs = settings.cuda_graphs and self.start_from_device
        self.pads_batches = self.use_graphs
        self.compute_stream = torch.cuda.Stream(self.dev)
        self.graph_sizes = graph_bucket_sizes(self.max_pairs, settings.cuda_graph_buckets)
        self.graph_batches = 0
        self.graphs_ready = False
        self.row_search_steps = search_steps(self.max_pairs)  # sample ranges -> row indices (row_index.py)

    @property
    def device(self) -> str:
        return f"{self.dev} ({torch.cuda.get_device_name(self.dev)})"

    def load(self, split: Split, resident: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Bind the split; with start_from_device its int8 inputs go to the GPU (copied from `resident`, another
        GPU's copy, when given)."""
        super().load(split)
        self._drop_graphs()
        if resident is not None and self.start_from_device:
            self.numeric_dev, self.categorical_dev = (t.to(self.dev) for t in resident)
            return
        self.host_inputs = (self._numeric_int8(split), self._categorical(split))
        if self.start_from_device:
            self.numeric_dev = upload_rows(self.host_inputs[0], self.dev)
            self.categorical_dev = upload_rows(self.host_inputs[1], self.dev)

    @staticmethod
    def _numeric_int8(split: Split) -> np.ndarray:
        """int8 [N, 13]: numeric_int8_linear.npy, or quantized from numeric_fp32 once."""
        numeric = split.optional("numeric_int8_linear.npy")
        return quantize_numeric(split.numeric).numpy() if numeric is None else numeric

    def _categorical(self, split: Split) -> np.ndarray:
        """int32 [N, 26] ids, or [N, 16] packed words with compress_categorical_inputs (the split's
        categorical_int32_compressed.npy, else packed here once)."""
        if self.packing is None:
            return split.categorical
        packed = split.optional("categorical_int32_compressed.npy")
        if packed is not None:
            return packed
        out = np.empty((len(split), 16), dtype=np.int32)
        for lo in range(0, len(split), COPY_ROWS):
            ids = torch.from_numpy(np.array(split.categorical[lo:lo + COPY_ROWS])).to(self.dev)
            out[lo:lo + ids.shape[0]] = pack_torch(ids, self.packing).cpu().numpy()
        return out

    def _run(self, b: Bundle, numeric: torch.Tensor, categorical: torch.Tensor, rows: torch.Tensor | None,
             n: int) -> None:
        """Enqueue the three stages for n pairs and the D2H copy of the result (inputs staged on b.stream)."""
        self._compute_then_copy(b, n, lambda: self._kernels(b, numeric, categorical, rows, n))

    def _replay(self, b: Bundle, n: int) -> None:
        """Replay the bundle's graph of the smallest bucket that holds n pairs (its packed ranges are on the
        device already, or on their way on b.stream)."""
        size = self.graph_sizes[int(np.searchsorted(self.graph_sizes, n))]
        self._compute_then_copy(b, n, b.graphs[size].replay)
        self.graph_batches += 1

    def _compute_then_copy(self, b: Bundle, n: int, kernels: Callable[[], None]) -> None:
        """kernels() on the compute stream after b.stream's staging, then the copy back on b.stream."""
        b.staged.record(b.stream)
        self.compute_stream.wait_event(b.staged)
        with torch.cuda.stream(self.compute_stream):
            kernels()
            b.computed.record(self.compute_stream)
        b.stream.wait_event(b.computed)
        with torch.cuda.stream(b.stream):
            self._copy_back(b, n)
            b.done.record(b.stream)

    def _kernels(self, b: Bundle, numeric: torch.Tensor, categorical: torch.Tensor, rows: torch.Tensor | None,
                 n: int) -> None:
        """The three kernel stages for n pairs on the current stream: numeric int8 [*, 13] and categorical int32
        [*, 26 or 16] (rows int64 [n] picks their rows, or None: rows 0..n-1) -> b.probs[:n]."""
        self.bottom(numeric, rows, n, b.top_in)
        self.interaction(categorical, rows, n, b.top_in)
        self.top(b.top_in, b.hidden, b.probs, n)

    @staticmethod
    def _copy_back(b: Bundle, n: int) -> None:
        """Probabilities of n pairs to the bundle's pinned host buffer, on the current stream."""
        b.probs_host[:n].copy_(b.probs[:n], non_blocking=True)

    def _take_all_bundles(self) -> list[Bundle]:
        """Every bundle, out of the queue (only while no batch is in flight); put them back after."""
        return [self.bundles.get() for _ in range(self.bundles.qsize())]

    def _drop_graphs(self) -> None:
        """Forget the recorded graphs: they hold the addresses of the previous split's device inputs."""
        bundles = self._take_all_bundles()
        for b in bundles:
            b.graphs = {}
            self.bundles.put(b)
        self.graphs_ready = False

    def _graph_body(self, b: Bundle, size: int) -> None:
        """What a graph records, on the current stream: b.ranges (packed by row_index.pack_ranges) -> `size`
        row indices -> the three stages for `size` pairs."""
        expand_rows(b.ranges, b.rows, size, self.row_search_steps)
        self._kernels(b, self.numeric_dev, self.categorical_dev, b.rows, size)

    def _capture_graphs(self) -> None:
        """Record every bundle's pipeline (row indirection over the resident test set) once per bucket size as
        a CUDA graph. Each body runs once eagerly first (one batch of sample 0's rows), so that nothing compiles
        while a graph records."""
        bundles = self._take_all_bundles()
        try:
            with torch.cuda.device(self.dev):
                torch.cuda.synchronize(self.dev)
                for b in bundles:
                    self._stage_ranges(b, np.zeros(1, np.int64), np.ones(1, np.int64))
                    for size in self.graph_sizes:
                        with torch.cuda.stream(b.stream):
                            self._graph_body(b, size)
                        b.stream.synchronize()
                        graph = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(graph, stream=b.stream, capture_error_mode="thread_local"):
                            self._graph_body(b, size)
                        b.graphs[size] = graph
                torch.cuda.synchronize(self.dev)
        finally:
            for b in bundles:
                self.bundles.put(b)

    def _stage_ranges(self, b: Bundle, starts: np.ndarray, ends: np.ndarray) -> None:
        """Pack the batch's sample ranges (row_index.pack_ranges) and copy them to the bundle's device buffer,
        on its stream: all a graph replay needs."""
        words = packed_length(len(starts))
        pack_ranges(starts, ends, b.ranges_host[:words].numpy())
        with torch.cuda.stream(b.stream):
            b.ranges[:words].copy_(b.ranges_host[:words], non_blocking=True)

    def _stage_inputs(self, b: Bundle, starts: np.ndarray, ends: np.ndarray,
                      n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Device inputs for the batch: views of the resident test set (with a row index when the samples are
        not contiguous), or copies through the bundle's pinned staging buffers."""
        span = contiguous_span(starts, ends)
        if self.numeric_dev is not None:
            if span is not None:
                lo, hi = span
                return self.numeric_dev[lo:hi], self.categorical_dev[lo:hi], None
            return self.numeric_dev, self.categorical_dev, self._device_rows(b, starts, ends, n)
        return self._staged(b, starts, ends, n, span)

    def _staged(self, b: Bundle, starts: np.ndarray, ends: np.ndarray, n: int,
                span: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Host-staged inputs: contiguous samples go straight from the memory map to the GPU; others are gathered
        into the bundle's pinned buffers by `staging_threads` workers, then copied."""
        numeric_src, cat_src = self.host_inputs
        width = cat_src.shape[1]
        with torch.cuda.stream(b.stream):
            if span is not None:
                lo, hi = span
                b.numeric[:n].copy_(torch.from_numpy(np.array(numeric_src[lo:hi])))
                b.categorical[:n].copy_(torch.from_numpy(np.array(cat_src[lo:hi])))
            else:
                rows = ranges_to_rows(starts, ends)
                self._gather_pinned(rows, numeric_src, b.numeric_host[:n].numpy())
                self._gather_pinned(rows, cat_src, b.categorical_host[:n].numpy())
                b.numeric[:n].copy_(b.numeric_host[:n], non_blocking=True)
                b.categorical[:n].copy_(b.categorical_host[:n], non_blocking=True)
        self.bytes_to_device += n * (numeric_src.shape[1] + 4 * width)
        return b.numeric[:n], b.categorical[:n], None

    def _gather_pinned(self, rows: np.ndarray, source: np.ndarray, out: np.ndarray) -> None:
        """out[i] = source[rows[i]], split across the staging workers (numpy's take releases the GIL)."""
        pieces = np.array_split(np.arange(len(rows)), max(1, min(self.staging_threads, len(rows) // 4096)))
        list(self.staging.map(lambda idx: np.take(source, rows[idx], axis=0, out=out[idx[0]:idx[-1] + 1])
                              if len(idx) else None, pieces))

    def _device_rows(self, b: Bundle, starts: np.ndarray, ends: np.ndarray, n: int) -> torch.Tensor:
        """Expand the sample ranges into pair row indices on the GPU (row_index.py): only the packed ranges cross
        the bus."""
        self._stage_ranges(b, starts, ends)
        with torch.cuda.stream(b.stream):
            expand_rows(b.ranges, b.rows, n, self.row_search_steps)
        return b.rows[:n]

    def _submit_chunk(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        n = int((ends - starts).sum())
        b = self.bundles.get()
        try:
            with torch.cuda.device(self.dev):  # Triton launches on the current device: make it this engine's
                b.stream.wait_stream(torch.cuda.current_stream(self.dev))
                if self.graphs_ready:
                    self._stage_ranges(b, starts, ends)
                    self._replay(b, n)
                else:
                    numeric, categorical, rows = self._stage_inputs(b, starts, ends, n)
                    self._run(b, numeric, categorical, rows, n)
        except BaseException:
            self.bundles.put(b)
            raise
        return self.completer.submit(self._finish, b, n)

    def _finish(self, b: Bundle, n: int) -> np.ndarray:
        try:
            b.done.synchronize()
            return b.probs_host[:n].numpy().copy()
        finally:
            self.bundles.put(b)

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        if self.split is None:
            raise RuntimeError("cuda engine: load() a split before predicting")
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        with self.lock:
            futures = [self._submit_chunk(s, e) for s, e in chunk_ranges(starts, ends, self.max_pairs)]
        if len(futures) == 1:
            return futures[0]
        return join_futures(futures)

    def predict_ranges(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        return self.predict_ranges_async(starts, ends).result()

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Raw inputs (float32 [B, 13] log1p'd, int32 [B, 26]) -> float32 [B], in max_pairs chunks."""
        out = []
        for lo in range(0, numeric.shape[0], self.max_pairs):
            hi = min(numeric.shape[0], lo + self.max_pairs)
            b = self.bundles.get()
            try:
                torch.cuda.set_device(self.dev)
                x = quantize_numeric(numeric[lo:hi]).to(self.dev)
                ids = np.ascontiguousarray(categorical[lo:hi], dtype=np.int32)
                c = torch.from_numpy(ids if self.packing is None else pack(ids, self.packing)).to(self.dev)
                torch.cuda.current_stream(self.dev).synchronize()
                self._run(b, x, c, None, hi - lo)
                b.done.synchronize()
                out.append(b.probs_host[:hi - lo].numpy().copy())
            finally:
                self.bundles.put(b)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def warmup(self) -> None:
        """Compile every kernel variant before timed work: contiguous rows (at an aligned and an odd start) and
        indirect rows. Pair counts and input alignment are not specialized on (do_not_specialize), so no batch
        size met later compiles a new variant mid-run."""
        if self.split is None or len(self.split) == 0:
            return
        n = min(len(self.split), 1024)
        self.predict_ranges(np.array([0]), np.array([n]))
        if n > 2:
            self.predict_ranges(np.array([1]), np.array([n]))
            self.predict_ranges(np.array([1, 0]), np.array([2, 1]))
        if self.use_graphs and self.numeric_dev is not None and not self.graphs_ready:
            self._capture_graphs()
            self.graphs_ready = True

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "device": self.device, "precision": "int8",
                "gpu_batch_size": self.max_pairs, "start_from_device": self.start_from_device,
                "embedding_weights_on_gpu_part": self.gpu_part,
                "compress_categorical_inputs": self.packing is not None, "bytes_to_device": self.bytes_to_device,
                "table_bytes_on_gpu": self.table_bytes_on_gpu, "cuda_graphs": self.use_graphs,
                "cuda_graph_sizes": self.graph_sizes if self.use_graphs else [],
                "graph_batches": self.graph_batches,
                "top_gemm": self.top_gemm, "top_gemm_first_layer": self.top.configs[0].cutlass or "triton",
                "cutlass_final_layer": self.cutlass_final_layer,
                "interaction_kernel": self.interaction.kernel,
                "interaction_pairs_per_warp": self.interaction.pairs_per_warp,
                "bottom_kernel": self.bottom.kernel}

    def _bottom(self, qm, kernel: str) -> BottomMLP:
        """The bottom MLP on `kernel` (setting "bottom_kernel"); the CUDA kernel where its library is not built or
        the GPU is not a Hopper: a warning on stderr and the Triton kernel."""
        try:
            return BottomMLP(qm, self.dev, kernel=kernel)
        except KernelsUnavailable as exc:
            print(f"warning: bottom_kernel {kernel}: {exc}; the bottom MLP runs in Triton", file=sys.stderr)
            return BottomMLP(qm, self.dev)

    def _interaction(self, qm, offsets: torch.Tensor, kernel: str, pairs_per_warp: int) -> Interaction:
        """The gather + interaction on `kernel` (setting "interaction_kernel"; "interaction_pairs_per_warp" for the
        CUDA kernel); the CUDA kernel where its library is not built or the GPU is not a Hopper: a warning on stderr
        and the Triton kernel."""
        try:
            return Interaction(qm, self.store, offsets, packing=self.packing,
                               kernel=kernel, pairs_per_warp=pairs_per_warp)
        except KernelsUnavailable as exc:
            print(f"warning: interaction_kernel {kernel}: {exc}; the interaction runs in Triton", file=sys.stderr)
            return Interaction(qm, self.store, offsets, packing=self.packing)

    def _hidden_layer_kernels(self, top_gemm: str, first_layer: str = "") -> str:
        """Put the top MLP's hidden layers on the CUTLASS kernel `top_gemm` (setting "top_gemm"; with setting
        "cutlass_final_layer" the last layer too; setting "top_gemm_first_layer", where not empty, the first hidden
        layer's kernel); where the library is not built or the GPU is not a Hopper, say so on stderr and keep
        Triton. Returns the kernels in use."""
        if top_gemm == "triton":
            if first_layer:
                print(f"warning: top_gemm_first_layer {first_layer} needs a CUTLASS top_gemm; the top layers run in "
                      f"Triton", file=sys.stderr)
            self.cutlass_final_layer = False
            return top_gemm
        try:
            use_cutlass_hidden_layers(self.top, top_gemm, final_layer=self.cutlass_final_layer,
                                      first_layer=first_layer)
        except KernelsUnavailable as exc:
            print(f"warning: top_gemm {top_gemm}: {exc}; the top layers run in Triton", file=sys.stderr)
            self.cutlass_final_layer = False
            return "triton"
        return top_gemm

    def close(self) -> None:
        self.completer.shutdown(wait=True)
        self._drop_graphs()
        self.staging.shutdown(wait=True)
        self.numeric_dev = self.categorical_dev = None
        self.tables = self.store = None  # type: ignore[assignment]
        torch.cuda.empty_cache()
