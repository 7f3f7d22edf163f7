"""Harness pieces that need no engine: batching cuts, LoadGen settings, log parsing, the results table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlrm_bench.errors import UserError
from dlrm_bench.harness.loadgen_settings import Overrides, build_test_settings, load_rules
from dlrm_bench.harness.logs import make_run_root, update_latest
from dlrm_bench.loadgen_logs import loadgen_metrics, read_detail_log
from dlrm_bench.engines.base import cut_by_pairs
from dlrm_bench.report import results_table
from dlrm_bench.settings import Settings


def test_cut_by_pairs_respects_limit_and_covers_all() -> None:
    lengths = np.array([100, 200, 700, 100, 100, 900, 50])
    cuts = cut_by_pairs(lengths, 800)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(cuts, cuts[1:]))
    for lo, hi in cuts:
        assert hi - lo == 1 or lengths[lo:hi].sum() <= 800
    assert cut_by_pairs(np.array([5000]), 10) == [(0, 1)]


def test_test_settings_use_the_v3_0_rules_not_the_embedded_conf() -> None:
    rules = load_rules()
    assert rules["round"] == "v3.0"
    ts = build_test_settings("Server", "PerformanceOnly", Settings(server_target_qps=123), 500, Overrides())
    assert (ts.qsl_rng_seed, ts.sample_index_rng_seed, ts.schedule_rng_seed) == (
        10003631887983097364, 17183018601990103738, 12134888396634371638)
    assert ts.server_target_latency_ns == 30_000_000
    assert ts.performance_sample_count_override == 500
    assert ts.min_duration_ms == rules["min_duration_ms"] == 600_000
    assert ts.min_query_count == 270336
    assert ts.server_target_qps == 123
    ts = build_test_settings("Offline", "PerformanceOnly", Settings(), 10**6, Overrides(min_duration_s=5, min_query_count=7,
                                                                                       offline_expected_qps=99))
    assert (ts.min_duration_ms, ts.min_query_count, ts.offline_expected_qps) == (5000, 7, 99)
    assert ts.performance_sample_count_override == 204800
    assert build_test_settings("Offline", "PerformanceOnly", Settings(), 10**6, Overrides()).min_query_count == 24576


def test_log_root_unwritable_is_clear(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="not writable"):
        make_run_root(blocker / "logs")


def test_latest_link_points_at_newest(tmp_path: Path) -> None:
    a = make_run_root(tmp_path)
    update_latest(tmp_path, a)
    b = tmp_path / "second"
    b.mkdir()
    update_latest(tmp_path, b)
    assert (tmp_path / "latest").resolve() == b.resolve()


def test_detail_log_parsing(tmp_path: Path) -> None:
    log = tmp_path / "mlperf_log_detail.txt"
    log.write_text(':::MLLOG {"key": "result_scheduled_samples_per_sec", "value": 100.5}\n'
                   ':::MLLOG {"key": "result_completed_samples_per_sec", "value": 99.0}\n'
                   ':::MLLOG {"key": "result_validity", "value": "VALID"}\n'
                   'garbage\n:::MLLOG {"key": "result_99.00_percentile_latency_ns", "value": 12000000}\n')
    m = loadgen_metrics(read_detail_log(log), "Server")
    assert m["samples_per_second"] == 100.5 and m["result_valid"] and m["latency_p99_ms"] == 12.0
    assert m["invalid_reason"] is None and m["completed_samples_per_second"] == 99.0
    offline = loadgen_metrics({"result_samples_per_second": 7.0, "result_99.00_percentile_latency_ns": 9e9}, "Offline")
    assert offline["samples_per_second"] == 7.0 and offline["latency_p99_ms"] is None  # the run's length, no metric
    single = loadgen_metrics({"result_qps_with_loadgen_overhead": 50.0, "early_stopping_latency_ss": 2e6,
                              "result_90.00_percentile_latency_ns": 1e6}, "SingleStream")
    assert (single["samples_per_second"], single["latency_p90_ms"], single["latency_p99_ms"]) == (50.0, 2.0, None)


def test_invalid_reason_is_loadgen_s_own() -> None:
    detail = {"result_validity": "INVALID", "result_perf_constraints_met": True, "result_min_duration_met": True,
              "result_min_queries_met": False, "early_stopping_met": False, "result_invalid_reason": "",
              "early_stopping_result": " * Run unsuccessful.  * Processed 300 queries.  * Would need to run at "
                                       "least 159 more queries,  with the run being successful if every additional "
                                       "query were under latency."}
    reason = loadgen_metrics(detail, "Server")["invalid_reason"]
    assert reason.startswith("min query count not met; early stopping: Processed 300 queries.")
    assert "at least 159 more queries" in reason


def test_results_table_metric_per_scenario() -> None:
    text = results_table([{"scenario": "Offline", "config_ver": "default", "test_mode": "PerformanceOnly",
                           "samples_per_second": 1234.5, "pairs_per_second": 333000.0, "result_valid": True,
                           "shortened_run": True, "latency_p99_ms": 9000.0},
                          {"scenario": "Offline", "config_ver": "default", "test_mode": "AccuracyOnly",
                           "auc": 0.8, "auc_ratio": 1.0, "accuracy_passed": True},
                          {"scenario": "Server", "config_ver": "default", "test_mode": "PerformanceOnly",
                           "samples_per_second": 10.0, "latency_p99_ms": 14.41, "result_valid": False,
                           "invalid_reason": "early stopping: Processed 300 queries."},
                          {"scenario": "SingleStream", "config_ver": "default", "test_mode": "PerformanceOnly",
                           "samples_per_second": 50.0, "latency_p90_ms": 2.5, "result_valid": True},
                          {"scenario": "Server", "config_ver": "default", "test_mode": "PerformanceOnly",
                           "result": "FAILED", "failure": "engine died"}])
    lines = text.splitlines()
    assert "1,234.5 samples/s" in lines[2] and "333,000" in lines[2] and "VALID (short run)" in lines[2]
    assert "9000" not in lines[2]  # Offline's p99 is the run's length, not a metric
    assert "80.0000" in lines[3] and lines[3].endswith("PASS")
    assert "10.0 scheduled samples/s" in lines[4] and "p99 14.41 ms" in lines[4]
    assert lines[4].endswith("INVALID: early stopping: Processed 300 queries.")
    assert "50.0 QPS" in lines[5] and "p90 2.50 ms" in lines[5]
    assert lines[6].endswith("FAILED: engine died")


def test_chunk_ranges_cuts_long_ranges_and_keeps_order() -> None:
    from dlrm_bench.engines.base import chunk_ranges, ranges_to_rows

    starts, ends = np.array([0, 5000, 100]), np.array([2500, 5003, 101])
    chunks = chunk_ranges(starts, ends, 1000)
    assert all(int((e - s).sum()) <= 1000 for s, e in chunks)
    rows = np.concatenate([ranges_to_rows(s, e) for s, e in chunks])
    np.testing.assert_array_equal(rows, ranges_to_rows(starts, ends))


def test_offline_takes_samples_in_chunks() -> None:
    """Offline takes LoadGen's one big query in `offline_take_samples` chunks (default 65,536), so the batcher's
    work per take stays shorter than the batches in flight; Server and SingleStream are capped by pairs."""
    from dlrm_bench.harness.sut import SERVER_TAKE, take_policy

    assert take_policy("Offline", Settings()).max_samples == 1 << 16
    assert take_policy("Offline", Settings(offline_take_samples=1 << 20)).max_samples == 1 << 20
    server = take_policy("Server", Settings(offline_take_samples=100, server_max_wait_ms=5.0, batch_size=262144))
    assert (server.max_samples, server.max_pairs, server.want_pairs) == (SERVER_TAKE, 262144, 262144)
    assert server.max_wait_s == 0.005
    backlog = take_policy("Server", Settings(batch_size=524288, server_backlog_batch_size=1048576))
    assert (backlog.max_pairs, backlog.want_pairs) == (1048576, 524288)
    assert take_policy("Server", Settings(batch_size=524288, server_backlog_batch_size=1000)).max_pairs == 524288
    single = take_policy("SingleStream", Settings(batch_size=4096, server_backlog_batch_size=1048576))
    assert (single.max_pairs, single.max_wait_s) == (4096, 0.0)


def test_a_server_batch_that_fills_slower_than_the_wait_is_named() -> None:
    """1,048,576 pairs at 736K samples/s of 270 pairs take 5.3 ms to arrive: with a 5 ms wait, batches leave part
    full under load, and the note says by how much and what to change; 524,288 pairs (2.6 ms) fill in time."""
    from dlrm_bench.harness.sut import batch_fill_note

    note = batch_fill_note(1048576, 5.0, 736000, 270.0)
    assert note is not None and "5.3 ms" in note and "~95% full" in note and "server_max_wait_ms above 5.3" in note
    assert batch_fill_note(1048576, 8.0, 736000, 270.0) is None
    assert batch_fill_note(524288, 5.0, 736000, 270.0) is None
    assert batch_fill_note(524288, 5.0, 0, 270.0) is None


def test_batches_larger_than_the_engine_computes_at_once_are_named() -> None:
    from dlrm_bench.harness.sut import batch_pieces_note, take_policy

    backlog = take_policy("Server", Settings(batch_size=524288, server_backlog_batch_size=1048576))
    note = batch_pieces_note(backlog.batch_pairs, 524288)
    assert note is not None and "1,048,576 pairs" in note and "at most 524,288" in note and "gpu_batch_size" in note
    assert batch_pieces_note(backlog.batch_pairs, 1048576) is None
    assert batch_pieces_note(backlog.batch_pairs, None) is None  # an engine without a limit (cpu, reference)
    assert batch_pieces_note(take_policy("Offline", Settings(batch_size=1048576)).batch_pairs, 524288) is not None
