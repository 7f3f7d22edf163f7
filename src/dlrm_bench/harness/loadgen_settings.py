"""LoadGen TestSettings from the round's rules (mlperf_rules: configs/dlrm/loadgen_rules.json), the scenario
config and flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlperf_loadgen as lg

from dlrm_bench.mlperf_rules import load_rules
from dlrm_bench.settings import Settings

SCENARIO_ENUM = {
    "Offline": lg.TestScenario.Offline,
    "Server": lg.TestScenario.Server,
    "SingleStream": lg.TestScenario.SingleStream,
}
MODE_ENUM = {
    "PerformanceOnly": lg.TestMode.PerformanceOnly,
    "AccuracyOnly": lg.TestMode.AccuracyOnly,
}


@dataclass(frozen=True)
class Overrides:
    """Command-line overrides for quick runs (None = use the config / the rules)."""

    min_duration_s: float | None = None
    min_query_count: int | None = None
    server_target_qps: float | None = None
    offline_expected_qps: float | None = None
    quick_min_query_count: dict[str, int] | None = None
    """Per-scenario query minimum for quick runs on synthetic data (used when min_query_count is None)."""


def build_test_settings(scenario: str, mode: str, settings: Settings, total_samples: int,
                        overrides: Overrides, rules: dict[str, Any] | None = None) -> lg.TestSettings:
    """TestSettings with every rule set explicitly (nothing left to LoadGen's embedded mlperf.conf)."""
    rules = rules or load_rules()
    ts = lg.TestSettings()
    ts.scenario = SCENARIO_ENUM[scenario]
    ts.mode = MODE_ENUM[mode]
    ts.performance_sample_count_override = min(int(rules["performance_sample_count"]), total_samples)
    ts.qsl_rng_seed = int(rules["qsl_rng_seed"])
    ts.sample_index_rng_seed = int(rules["sample_index_rng_seed"])
    ts.schedule_rng_seed = int(rules["schedule_rng_seed"])
    ts.server_target_latency_ns = int(rules["server_target_latency_ms"] * 1_000_000)
    ts.server_target_latency_percentile = float(rules["server_target_latency_percentile"])
    ts.single_stream_target_latency_percentile = float(rules["single_stream_target_latency_percentile"])
    min_duration_s = overrides.min_duration_s
    if min_duration_s is None:
        min_duration_s = settings.min_duration_s
    if min_duration_s is None:
        min_duration_s = rules["min_duration_ms"] / 1000
    ts.min_duration_ms = int(min_duration_s * 1000)
    min_queries = overrides.min_query_count
    if min_queries is None and overrides.quick_min_query_count:
        min_queries = overrides.quick_min_query_count[scenario]
    if min_queries is None:
        min_queries = settings.min_query_count
    if min_queries is None:
        min_queries = rules["min_query_count"][scenario]
    ts.min_query_count = int(min_queries)
    ts.server_target_qps = float(overrides.server_target_qps or settings.server_target_qps)
    ts.offline_expected_qps = float(overrides.offline_expected_qps or settings.offline_expected_qps)
    if scenario == "Server":
        ts.server_coalesce_queries = settings.server_coalesce_queries
    if settings.single_stream_expected_latency_ms is not None:
        ts.single_stream_expected_latency_ns = int(settings.single_stream_expected_latency_ms * 1e6)
    return ts


def describe_test_settings(ts: lg.TestSettings) -> dict[str, Any]:
    """The fields that matter, JSON-able (for result.json)."""
    return {
        "min_duration_ms": ts.min_duration_ms,
        "min_query_count": ts.min_query_count,
        "performance_sample_count": ts.performance_sample_count_override,
        "server_target_qps": ts.server_target_qps,
        "server_target_latency_ms": ts.server_target_latency_ns / 1e6,
        "offline_expected_qps": ts.offline_expected_qps,
    }


def log_settings(outdir: Path) -> lg.LogSettings:
    out = lg.LogOutputSettings()
    out.outdir = str(outdir)
    out.copy_summary_to_stdout = False
    ls = lg.LogSettings()
    ls.log_output = out
    ls.enable_trace = False
    return ls
