"""Every setting of a run, in one place: name, type, allowed values, default and what it does.

`Settings` is a frozen dataclass; each field carries its documentation and its check in `field.metadata`. Config
files (`configs/dlrm/...`) and `--set KEY=VALUE` are validated against it (`Settings.with_values`): an unknown
name or a bad value is a `UserError` naming where it came from, the setting, the value and what was expected (for
an unknown name, the closest real one). `docs/configuration.md` is generated from it (`markdown`, `make docs`) and a
test keeps the two equal.

Dataclasses rather than pydantic: the settings are flat scalars with a handful of checks, the schema has to be read
inside Triton's Python-backend stub too (serving.json), and the standard library needs no install there.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from dlrm_bench.errors import UserError

GEMM_VARIANTS = ("128x128_c1x2_pingpong_fma_smemrows_e64x128", "128x128_c1x2_pingpong_fma_permuted",
                 "128x128_c1x2_pingpong_fma", "128x128_c1x2_pingpong",
                 "64x256_c2x1_pingpong_fma_smemrows_e64x128", "64x256_c1x2_pingpong_fma_smemrows_e64x128",
                 "128x128_k256_c1x2_pingpong_fma_smemrows_e64x128", "64x256_c2x1_pingpong_fma_smemrows_e64x256")
"""The CUTLASS top-MLP kernels `top_gemm` can name (engines/cuda/kernel_library.py builds the first two by
default: the ones the configs use; `make kernels GEMM_VARIANTS=all` builds the others for benchmarks/)."""
OFF_GPU_IRQS = "off-gpu-irqs"
CPU_LIST = re.compile(r"^\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*$")
"""A Linux CPU list: ranges and single CPUs separated by commas."""
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
ENDPOINTS = re.compile(r"^(|[^\s,:]+:\d{1,5}(,[^\s,:]+:\d{1,5})*)$")
"""HOST:PORT,HOST:PORT (a network SUT's nodes)."""
GROUPS = ("LoadGen and harness", "CPU engine", "reference engine", "CUDA engine", "Triton Inference Server")


@dataclass(frozen=True)
class Check:
    """What a setting accepts: `expected` in words, `accepts` as a predicate on the (JSON) value."""

    expected: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(low: int, high: int | None = None) -> Check:
    words = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return Check(words, lambda v: _is_int(v) and v >= low and (high is None or v <= high))


def number(low: float, above: bool = False, high: float | None = None) -> Check:
    words = f"a number {'>' if above else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")
    return Check(words, lambda v: _is_number(v) and (v > low if above else v >= low) and (high is None or v <= high))


def boolean() -> Check:
    return Check("true or false", lambda v: isinstance(v, bool))


def one_of(*names: str) -> Check:
    return Check("one of " + ", ".join(repr(n) if n == "" else n for n in names),
                 lambda v: isinstance(v, str) and v in names)


def matching(pattern: re.Pattern[str], words: str) -> Check:
    return Check(words, lambda v: isinstance(v, str) and bool(pattern.match(v)))


def optional(check: Check) -> Check:
    """`check`, or null (unset)."""
    return Check(check.expected + ", or null", lambda v: v is None or check.accepts(v))


def setting(default: Any, check: Check, group: str, doc: str) -> Any:
    """A dataclass field with its check, group and documentation."""
    return dataclasses.field(default=default, metadata={"check": check, "group": group, "doc": doc})


RUN, CPU, REFERENCE, CUDA, TRITON = GROUPS
KERNELS = ("triton", "cuda")


@dataclass(frozen=True)
class Settings:
    """The settings of one (scenario, config_ver, engine) on one system."""

    engine: str = setting("", one_of("", "reference", "cpu", "cuda"), RUN,
                          "Engine the system uses unless `--engine` says otherwise (empty: the fastest this machine "
                          "has). A configured engine this machine lacks is replaced by the fastest, with a note.")
    batch_size: int = setting(16384, integer(1), RUN,
                              "Pairs per batch the harness hands the engine: Offline cuts LoadGen's query into "
                              "batches of this size; Server and SingleStream take at most this many pairs at once "
                              "(Server: unless server_backlog_batch_size is larger).")
    inflight_batches: int = setting(2, integer(1), RUN, "Batches handed to the engine before the first completes.")
    complete_threads: int = setting(1, integer(1), RUN, "Threads that hand finished batches back to LoadGen.")
    offline_take_samples: int = setting(65536, integer(1), RUN,
                                        "Offline: samples the batcher takes from LoadGen's one query at a time (a "
                                        "take's host work must stay shorter than the batches in flight).")
    server_max_wait_ms: float = setting(1.0, number(0), RUN,
                                        "Server: the longest the oldest queued sample waits for company before a "
                                        "part-full batch leaves.")
    server_backlog_batch_size: int = setting(0, integer(0), RUN,
                                             "Server: with more than batch_size pairs queued, take up to this many "
                                             "pairs at once, as one batch (0: batch_size). A GPU runs larger batches "
                                             "at more pairs per second, so a backlog after a host stall drains "
                                             "sooner. The cuda engine computes at most gpu_batch_size at a time.")
    server_target_qps: float = setting(1.0, number(0, above=True), RUN,
                                       "Server: LoadGen's target rate, samples/s (`--server_target_qps` overrides).")
    offline_expected_qps: float = setting(1.0, number(0, above=True), RUN,
                                          "Offline: LoadGen's expected rate, samples/s; sizes the query "
                                          "(`--offline_expected_qps` overrides).")
    single_stream_expected_latency_ms: float | None = setting(
        None, optional(number(0, above=True)), RUN, "SingleStream: LoadGen's expected latency (null: LoadGen's).")
    server_coalesce_queries: bool = setting(True, boolean(), RUN,
                                            "Server: LoadGen may issue the queries that became due together in "
                                            "one call.")
    min_duration_s: float | None = setting(None, optional(number(0)), RUN,
                                           "LoadGen's minimum duration for this system (null: the rules' 600 s; "
                                           "`--min_duration` overrides).")
    min_query_count: int | None = setting(None, optional(integer(1)), RUN,
                                          "LoadGen's minimum query count for this system (null: the rules'; "
                                          "`--min_query_count` overrides).")
    gil_switch_interval_ms: float = setting(0.5, number(0, above=True), RUN,
                                            "Python's GIL switch interval during a test (Python's own is 5 ms).")
    gc_during_test: str = setting("frozen", one_of("frozen", "off"), RUN,
                                  "`frozen`: objects alive at the start are frozen, collection stays on for new ones; "
                                  "`off`: no collection during the test (cycles are collected when it ends).")
    stall_watch: bool = setting(True, boolean(), RUN,
                                "A watchdog thread records every moment no Python thread ran for more than 4 ms "
                                "(result.json `interpreter_pauses`).")
    cpu_affinity: str | None = setting(
        None, optional(Check(f'a Linux CPU list such as "2-15" or "0,2,4-7", or "{OFF_GPU_IRQS}"',
                             lambda v: isinstance(v, str) and (v == OFF_GPU_IRQS or bool(CPU_LIST.match(v))))),
        RUN, f"Pin the process to these CPUs once the engine is up; `{OFF_GPU_IRQS}`: every CPU it may use less "
             "those that served an nvidia interrupt (/proc/interrupts). null: as started.")
    loadgen_bridge: str = setting("native", one_of("native", "python"), RUN,
                                  "`native`: LoadGen's C API and a C sample queue (no Python object per sample); "
                                  "`python`: LoadGen's Python bindings (chosen, with a note, where no C compiler "
                                  "or a stripped LoadGen prevents `native`).")
    sut: str = setting("local", one_of("local", "network", "network_ranges"), RUN,
                       "`local`: the batching SUT drives the engine in this process; `network`: LoadGen's Query "
                       "Dispatch Library sends every query's features to the `dlrm-bench serve` nodes of "
                       "`network_endpoints` (MLPerf's Network division, docs/network.md); `network_ranges`: the "
                       "same with row ranges of the nodes' own test split (open division). `--sut` overrides.")

    threads: int = setting(0, integer(0), CPU, "Intra-op threads of the CPU engines (0: every core).")
    cpu_gemm: str = setting("int8", one_of("int8", "fp32"), CPU,
                            "`int8`: oneDNN int8 GEMMs; `fp32`: exact fp32 GEMMs on the same integers (for a torch "
                            "build without oneDNN).")
    cpu_interaction: str = setting("native", one_of("native", "torch"), CPU,
                                   "`native`: the fused C gather + interaction (compiled on first use); `torch`: "
                                   "PyTorch operations (where no C compiler is present).")
    embedding_weights_in_ram_part: float = setting(
        0.0, number(0, high=1), CPU,
        "Fraction of table rows copied into RAM, the most used first (row_frequencies.bin); the rest is read through "
        "the memory-mapped .bin file (0: all mapped, a model larger than the RAM runs; 1: all copied).")

    device: str = setting("auto", matching(DEVICE, "auto, cpu, cuda or cuda:N"), REFERENCE,
                          "Where the FP32 reference engine computes (auto: cuda when present).")
    device_table_budget_gb: float | None = setting(
        None, optional(number(0)), REFERENCE,
        "GB of tables the reference engine may put on the GPU (the largest that fit; null: as many as fit).")

    gpus: int = setting(0, integer(0), CUDA, "GPUs the cuda engine uses (0: every visible one).")
    gpu_batch_size: int = setting(262144, integer(1), CUDA,
                                  "Pairs per GPU batch; the buffers are sized for it and larger harness batches are "
                                  "cut.")
    gpu_num_bundles: int = setting(2, integer(1), CUDA,
                                   "Batches in flight on each GPU, each with its own buffers and CUDA stream.")
    start_from_device: bool = setting(True, boolean(), CUDA,
                                      "Keep the test set's int8 inputs on the GPU (else staged through pinned host "
                                      "memory per batch).")
    staging_threads: int = setting(4, integer(1), CUDA,
                                   "Threads that gather host-staged inputs into pinned memory (start_from_device "
                                   "false).")
    embedding_weights_on_gpu_part: float = setting(
        1.0, number(0, high=1), CUDA,
        "Fraction of table rows on the GPU, the most used first; the rest stay in pinned host memory, read by the "
        "kernel over the bus (hot/cold tables).")
    compress_categorical_inputs: bool = setting(False, boolean(), CUDA,
                                                "Ship the 26 ids of a pair packed into 16 int32 words, unpacked on "
                                                "the GPU.")
    cuda_graphs: bool = setting(False, boolean(), CUDA,
                                "Record each bundle's kernels as CUDA graphs at warmup (with start_from_device): a "
                                "batch then costs the host one copy and one graph replay.")
    cuda_graph_buckets: int = setting(16, integer(1), CUDA,
                                      "Graph batch sizes, evenly up to gpu_batch_size; a batch replays the smallest "
                                      "that holds it.")
    top_gemm: str = setting("triton", one_of("triton", *GEMM_VARIANTS), CUDA,
                            "Kernel of the top MLP's hidden layers: `triton` (OpenAI Triton) or a CUTLASS variant of "
                            "the native kernel library (`make kernels`, Hopper; else a warning and Triton).")
    top_gemm_first_layer: str = setting("", one_of("", *GEMM_VARIANTS), CUDA,
                                        "The first hidden layer's CUTLASS kernel when it should differ from "
                                        "top_gemm's (empty: top_gemm's).")
    cutlass_final_layer: bool = setting(False, boolean(), CUDA,
                                        "With a CUTLASS top_gemm: the last two layers as one CUTLASS GEMM whose "
                                        "epilogue does the 256 -> 1 dot.")
    bottom_kernel: str = setting("triton", one_of(*KERNELS), CUDA,
                                 "The bottom MLP's kernel: `triton` or `cuda` (the native library's persistent "
                                 "wgmma kernel; Hopper, else a warning and Triton).")
    interaction_kernel: str = setting("triton", one_of(*KERNELS), CUDA,
                                      "The gather + interaction's kernel: `triton` or `cuda` (the native library's "
                                      "warp-per-pair MMA kernel; needs plain ids and every row on the GPU).")
    interaction_pairs_per_warp: int = setting(8, integer(1, 64), CUDA,
                                              "CUDA interaction kernel: pairs each warp computes in turn (the next "
                                              "pair's rows load meanwhile).")

    triton_inputs: str = setting("ranges", one_of("ranges", "rows"), TRITON,
                                 "What a request carries: `ranges` of the server's own test split (16 bytes per "
                                 "sample) or the pairs' features (`rows`).")
    triton_instances: int = setting(1, integer(1), TRITON, "Model instances per device, each with its own engine.")
    triton_instance_kind: str = setting("auto", one_of("auto", "cpu", "gpu"), TRITON,
                                        "`auto`: KIND_GPU for the cuda engine or a cuda `device`, else KIND_CPU.")
    triton_max_queue_delay_us: int = setting(0, integer(0), TRITON,
                                             "How long Triton's dynamic batcher waits for more requests.")
    triton_max_requests: int = setting(64, integer(1), TRITON, "`ranges`: requests one execute() may take.")
    triton_model_inflight: int | None = setting(None, optional(integer(1)), TRITON,
                                                "Engine batches a model instance keeps in flight (null: "
                                                "inflight_batches).")
    triton_output_shm: bool = setting(True, boolean(), TRITON,
                                      "Predictions come back through a shared-memory region the client registered "
                                      "instead of the gRPC message.")
    triton_trace: bool = setting(False, boolean(), TRITON,
                                 "Client and model write per-request timestamps under the run's `trace/` folder.")
    triton_grpc_port: int = setting(0, integer(0, 65535), TRITON, "The server's gRPC port (0: any free one).")
    triton_startup_timeout_s: float = setting(900.0, number(0, above=True), TRITON,
                                              "Seconds to wait for the model to load.")
    triton_request_timeout_s: float = setting(600.0, number(0, above=True), TRITON, "Seconds one request may take.")
    triton_log_verbose: int = setting(0, integer(0), TRITON, "tritonserver's --log-verbose level.")
    network_endpoints: str = setting("", matching(ENDPOINTS, "comma-separated HOST:PORT gRPC endpoints, or empty"),
                                     TRITON, "`sut` network: the nodes' gRPC endpoints (`--endpoints` overrides).")
    network_node_timeout_s: float = setting(3.0, number(0, above=True), TRITON,
                                            "`sut` network: seconds a node may fail its health checks before it is "
                                            "declared down and its requests go to the other nodes.")
    network_inflight: int = setting(4, integer(1), TRITON,
                                    "`sut` network: full-size requests in flight per model instance of a node; "
                                    "more wait on the LoadGen node for the node with the fewest pairs outstanding.")

    def with_values(self, values: Mapping[str, Any], source: str) -> "Settings":
        """A copy with `values` applied, each checked; `source` names where they came from (a config file and
        its entry, or --set) for the error."""
        checked = {}
        for key, value in values.items():
            if key not in FIELDS:
                raise UserError(f"{source}: unknown setting '{key}'{closest_name(key, list(FIELDS))}")
            kind = str(FIELDS[key].type)
            if _is_int(value) and kind.startswith("str"):  # --set cpu_affinity=3 arrives as a number
                value = str(value)
            if not FIELDS[key].metadata["check"].accepts(value):
                raise UserError(f"{source}: setting '{key}' is {json.dumps(value)}: expected "
                                f"{FIELDS[key].metadata['check'].expected}")
            checked[key] = float(value) if _is_int(value) and kind.startswith("float") else value
        return dataclasses.replace(self, **checked)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "settings") -> "Settings":
        return cls().with_values(values, source)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Settings)}


def closest_name(name: str, names: list[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `names`, or ''."""
    close = difflib.get_close_matches(name, sorted(names), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def markdown() -> str:
    """docs/configuration.md's table of settings, one section per group."""
    lines = []
    for group in GROUPS:
        lines += ["", f"### {group}", "", "| setting | type | default | allowed | what it does |", "|---|---|---|---|---|"]
        for f in (f for f in FIELDS.values() if f.metadata["group"] == group):
            kind = str(f.type).replace(" | None", "")
            lines.append(f"| `{f.name}` | {kind} | `{json.dumps(f.default)}` | {f.metadata['check'].expected} | "
                         f"{f.metadata['doc']} |")
    return "\n".join(lines[1:]) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
