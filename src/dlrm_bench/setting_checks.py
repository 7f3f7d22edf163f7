"""Type and range checks of the settings that config.json files and `--set KEY=VALUE` give (README,
"Configuration"), so that a bad value stops a run before anything loads, with a message that names the setting, its
value, what was expected and where it came from, instead of a traceback deep inside an engine.

Settings not listed here pass unchecked (their readers check them, or they are free-form strings). Choices that
their own modules already check with a clear error (loadgen_bridge, gc_during_test, engine) are not repeated.
`unknown_settings` finds names that nothing reads (a typo in --set would otherwise be ignored in silence).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Callable

from dlrm_bench.engines.cuda.cutlass_gemm import VARIANTS as CUTLASS_VARIANTS
from dlrm_bench.errors import UserError
from dlrm_bench.harness.cpu_affinity import CPU_LIST, OFF_GPU_IRQS


@dataclass(frozen=True)
class Check:
    """What a setting accepts: `expected` in words, `accepts` as a predicate."""

    expected: str
    accepts: Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(low: int, high: int | None = None) -> Check:
    """An integer in [low, high] (no upper bound when high is None)."""
    words = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"
    return Check(words, lambda v: _is_int(v) and v >= low and (high is None or v <= high))


def number(low: float, inclusive: bool = True, high: float | None = None) -> Check:
    """A number above (or from, when inclusive) `low`, at most `high`."""
    words = f"a number {'>=' if inclusive else '>'} {low:g}" + ("" if high is None else f" and <= {high:g}")
    return Check(words, lambda v: _is_number(v) and (v >= low if inclusive else v > low)
                 and (high is None or v <= high))


def boolean() -> Check:
    return Check("true or false", lambda v: isinstance(v, bool))


def one_of(*names: str) -> Check:
    return Check("one of " + ", ".join(names), lambda v: isinstance(v, str) and v in names)


CHECKS: dict[str, Check] = {
    # harness and LoadGen
    "batch_size": integer(1),
    "inflight_batches": integer(1),
    "complete_threads": integer(1),
    "server_target_qps": number(0, inclusive=False),
    "offline_expected_qps": number(0, inclusive=False),
    "single_stream_expected_latency_ms": number(0, inclusive=False),
    "server_max_wait_ms": number(0),
    "offline_take_samples": integer(1),
    "server_coalesce_queries": boolean(),
    "server_num_issue_query_threads": integer(0),
    "gil_switch_interval_ms": number(0, inclusive=False),
    "stall_watch": boolean(),
    "stall_trace_ms": number(0),
    "min_duration_s": number(0),
    "min_query_count": integer(1),
    "cpu_affinity": Check(f'a CPU list like "2-15" or "0,2,4-7", or "{OFF_GPU_IRQS}"',
                          lambda v: (_is_int(v) and v >= 0) or v == OFF_GPU_IRQS
                          or (isinstance(v, str) and bool(CPU_LIST.match(v)))),
    # engines
    "threads": integer(0),
    "staging_threads": integer(1),
    "device_table_budget_gb": number(0),
    "embedding_weights_in_ram_part": number(0, high=1),
    "embedding_weights_on_gpu_part": number(0, high=1),
    "gpus": integer(0),
    "device_index": integer(0),
    "gpu_batch_size": integer(1),
    "gpu_num_bundles": integer(1),
    "start_from_device": boolean(),
    "check_contiguity": boolean(),
    "compress_categorical_inputs": boolean(),
    "cuda_graphs": boolean(),
    "cuda_event_blocking": boolean(),
    "cuda_graph_buckets": integer(1),
    "row_index_kernel": boolean(),
    "gemm_programs_per_sm": integer(1, 2),
    "shared_compute_stream": boolean(),
    "interaction_layout": one_of("triangle", "paired"),
    "top_gemm": one_of("triton", *CUTLASS_VARIANTS),
    "top_gemm_first_layer": Check("empty (top_gemm's kernel) or one of " + ", ".join(CUTLASS_VARIANTS),
                                  lambda v: v == "" or (isinstance(v, str) and v in CUTLASS_VARIANTS)),
    "cutlass_final_layer": boolean(),
    "interaction_kernel": one_of("triton", "cuda"),
    "interaction_pairs_per_warp": integer(1, 64),
    "bottom_kernel": one_of("triton", "cuda"),
    "front_overlap_slices": integer(1, 16),
    "top_mlp_row_chunks": integer(1, 64),
    "top_gemm_sms": integer(0),
    # Triton serving
    "triton_grpc_port": integer(0, 65535),
    "triton_startup_timeout_s": number(0, inclusive=False),
    "triton_request_timeout_s": number(0, inclusive=False),
    "triton_log_verbose": integer(0),
    "triton_instances": integer(1),
    "triton_model_inflight": integer(1),
    "triton_max_requests": integer(1),
    "triton_max_queue_delay_us": integer(0),
    "triton_output_shm": boolean(),
    "triton_trace": boolean(),
}


def check_settings(settings: dict[str, Any], source: str) -> None:
    """Raise a UserError for the first listed setting whose value `settings` gives wrongly; `source` says where
    the values came from (a config file and its entry, or --set)."""
    for key, value in settings.items():
        check = CHECKS.get(key)
        if check is not None and not check.accepts(value):
            raise UserError(f"{source}: setting '{key}' is {json.dumps(value)}: expected {check.expected}")


FREE_FORM = ("engine", "device", "gemm", "interaction", "loadgen_bridge", "gc_during_test", "triton_inputs",
             "triton_instance_kind", "system_config")
"""Settings read without a check here (strings their readers interpret)."""


def unknown_settings(keys: list[str], also_known: set[str]) -> list[tuple[str, str | None]]:
    """(name, closest known name or None) for each of `keys` that is neither checked here, free-form, nor in
    `also_known` (e.g. every key the shipped config files use)."""
    known = set(CHECKS) | set(FREE_FORM) | also_known
    out = []
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            out.append((key, close[0] if close else None))
    return out
