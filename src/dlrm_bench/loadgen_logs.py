"""Reading LoadGen's own logs: the `:::MLLOG` entries of mlperf_log_detail.txt and the metrics they hold."""

from __future__ import annotations

import json
import os
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


SCORE_KEYS = {"Offline": "result_samples_per_second", "Server": "result_scheduled_samples_per_sec",
              "SingleStream": "result_qps_with_loadgen_overhead"}
"""The throughput LoadGen reports per scenario (Server: scheduled samples/s, the v3.0 checker's metric)."""
LATENCY_KEYS = {"Server": ("p99", "result_99.00_percentile_latency_ns"),
                "SingleStream": ("p90", "early_stopping_latency_ss")}
"""The latency each scenario is judged by (SingleStream: LoadGen's early-stopping 90th percentile estimate, the
v3.0 checker's metric); Offline has none."""


def invalid_reason(detail: dict[str, Any]) -> str | None:
    """Why LoadGen called a run INVALID, in its own words (None when it is VALID or there is no verdict)."""
    if detail.get("result_validity") in (None, "VALID"):
        return None
    checks = {"result_perf_constraints_met": "latency constraint not met",
              "result_min_duration_met": "min duration not met", "result_min_queries_met": "min query count not met"}
    reasons = [text for key, text in checks.items() if detail.get(key) is False]
    if detail.get("early_stopping_met") is False:
        words = " ".join(str(detail.get("early_stopping_result", "")).replace("*", " ").split())
        reasons.append("early stopping: " + words.replace("Run unsuccessful. ", ""))
    if detail.get("result_invalid_reason"):
        reasons.append(str(detail["result_invalid_reason"]))
    return "; ".join(reasons) or "LoadGen gave no reason"


def _ms(ns: Any) -> float | None:
    return None if ns is None else float(ns) / 1e6


def loadgen_metrics(detail: dict[str, Any], scenario: str) -> dict[str, Any]:
    """The scenario's throughput and latency as LoadGen reports them, its verdict and why, from a parsed detail
    log. SingleStream falls back to the plain 90th percentile where no early-stopping estimate was logged."""
    sps = detail.get(SCORE_KEYS.get(scenario, ""))
    name, key = LATENCY_KEYS.get(scenario, (None, ""))
    latency = detail.get(key)
    if scenario == "SingleStream" and latency is None:
        latency = detail.get("result_90.00_percentile_latency_ns")
    return {
        "samples_per_second": float(sps) if sps is not None else None,
        "completed_samples_per_second": detail.get("result_completed_samples_per_sec"),
        "result_valid": detail.get("result_validity") == "VALID",
        "result_validity": detail.get("result_validity"),
        "invalid_reason": invalid_reason(detail),
        "latency_metric": name,
        "latency_p99_ms": _ms(latency) if name == "p99" else None,
        "latency_p90_ms": _ms(latency) if name == "p90" else None,
        "latency_min_ms": _ms(detail.get("result_min_latency_ns")),  # Offline: the one issue to the first result
        "loadgen_errors": detail.get("num_errors"),
    }


FAILED_SUFFIX = ".FAILED"


def mark_failed(folder: Path) -> list[str]:
    """Rename LoadGen's logs in the folder of a run that did not complete to <name>.FAILED, so that no tool
    (report, stage-results, MLPerf's checker) or reader takes them for a result; returns the new names."""
    renamed = []
    for path in sorted(folder.glob("mlperf_log_*")):
        if path.suffix != FAILED_SUFFIX:
            os.replace(path, path.with_name(path.name + FAILED_SUFFIX))
            renamed.append(path.name + FAILED_SUFFIX)
    return renamed
