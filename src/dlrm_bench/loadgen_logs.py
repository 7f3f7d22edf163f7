"""Reading LoadGen's own logs: the `:::MLLOG` entries of mlperf_log_detail.txt and the metrics they hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_detail_log(path: Path) -> dict[str, Any]:
    """The `:::MLLOG {...}` entries of mlperf_log_detail.txt as key -> value (the last value of each key)."""
    values: dict[str, Any] = {}
    if not path.exists():
        return values
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG "):
            continue
        try:
            entry = json.loads(line[len(":::MLLOG "):])
        except json.JSONDecodeError:
            continue
        values[entry.get("key", "")] = entry.get("value")
    return values


def loadgen_metrics(detail: dict[str, Any], scenario: str) -> dict[str, Any]:
    """samples/s, validity and latency percentiles from a parsed detail log."""
    if scenario == "Server":
        sps = detail.get("result_completed_samples_per_sec")
    elif scenario == "SingleStream":
        p90 = detail.get("result_90.00_percentile_latency_ns")
        sps = 1e9 / p90 if p90 else None
    else:
        sps = detail.get("result_samples_per_second")
    p99 = detail.get("result_99.00_percentile_latency_ns")
    p90 = detail.get("result_90.00_percentile_latency_ns")
    first = detail.get("result_min_latency_ns")  # Offline: LoadGen's single issue to the first result
    return {
        "samples_per_second": float(sps) if sps is not None else None,
        "result_valid": detail.get("result_validity") == "VALID",
        "result_validity": detail.get("result_validity"),
        "invalid_reason": detail.get("result_invalid_reason"),
        "latency_p99_ms": p99 / 1e6 if p99 is not None else None,
        "latency_p90_ms": p90 / 1e6 if p90 is not None else None,
        "latency_min_ms": first / 1e6 if first is not None else None,
        "loadgen_errors": detail.get("num_errors"),
    }
