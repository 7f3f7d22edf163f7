"""bench_triton_server.py's test plan and its Server capacity (the highest target every run of a variant held)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_triton_server as bt  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402


def _run(target: float, valid: bool) -> dict:
    return {"target_qps": target, "result_valid": valid}


def test_targets_parse_and_label_a_sweep() -> None:
    assert bt.parse_targets("350000, 420000,") == [350000.0, 420000.0]
    assert bt.parse_targets(None) == [] and bt.parse_targets("") == []
    plan = bt.test_plan(["Offline", "Server"], 455000.0, [350000.0, 420000.0])
    assert plan == [("Offline", "Offline", 455000.0), ("Server 350000", "Server", 350000.0),
                    ("Server 420000", "Server", 420000.0)]
    assert bt.test_plan(["Server"], 1.0, [300000.0]) == [("Server", "Server", 300000.0)]


def test_capacity_is_the_highest_target_valid_in_every_run() -> None:
    runs = {
        "Offline": {"in-process": [_run(1, True)], "triton-ranges": [_run(1, True)]},
        "Server 400000": {"in-process": [_run(4e5, True), _run(4e5, True)],
                          "triton-ranges": [_run(4e5, True), _run(4e5, True)]},
        "Server 420000": {"in-process": [_run(4.2e5, True), _run(4.2e5, True)],
                          "triton-ranges": [_run(4.2e5, True), _run(4.2e5, False)]},
        "Server 440000": {"in-process": [_run(4.4e5, False), _run(4.4e5, True)],
                          "triton-ranges": [_run(4.4e5, False), _run(4.4e5, False)]},
    }
    capacity = bt.server_capacity(runs)
    assert capacity["in-process"] == {"highest_valid_target_qps": 420000.0, "ratio": 1.0}
    assert capacity["triton-ranges"]["highest_valid_target_qps"] == 400000.0
    assert abs(capacity["triton-ranges"]["ratio"] - 400 / 420) < 1e-12


def test_capacity_without_any_valid_run_says_none() -> None:
    runs = {"Server 1": {"in-process": [_run(1, False)], "triton-ranges": [_run(1, True)]}}
    capacity = bt.server_capacity(runs)
    assert capacity["in-process"] == {"highest_valid_target_qps": None, "ratio": None}
    assert capacity["triton-ranges"] == {"highest_valid_target_qps": 1.0, "ratio": None}


def test_schedule_interleaves_or_runs_variants_one_after_another() -> None:
    tests = [("Offline", "Offline", 1.0), ("Server", "Server", 2.0)]
    variants = ["in-process", "triton-ranges"]
    interleaved = [(r, t[0], v) for r, t, v in bt.schedule(variants, tests, 2, sequential=False)]
    assert interleaved == [(0, "Offline", "in-process"), (0, "Offline", "triton-ranges"),
                           (0, "Server", "in-process"), (0, "Server", "triton-ranges"),
                           (1, "Offline", "triton-ranges"), (1, "Offline", "in-process"),
                           (1, "Server", "triton-ranges"), (1, "Server", "in-process")]
    sequential = [(r, t[0], v) for r, t, v in bt.schedule(variants, tests, 2, sequential=True)]
    assert [v for _, _, v in sequential] == ["in-process"] * 4 + ["triton-ranges"] * 4
    assert sequential[:4] == [(0, "Offline", "in-process"), (0, "Server", "in-process"),
                              (1, "Offline", "in-process"), (1, "Server", "in-process")]


def test_triton_only_settings_leave_in_process_alone() -> None:
    shared = Settings(inflight_batches=3, batch_size=262144)
    assert bt.variant_settings(shared, "in-process", {"inflight_batches": 4}) is shared
    assert bt.variant_settings(shared, "triton-ranges", {"inflight_batches": 4}) == Settings(inflight_batches=4,
                                                                                               batch_size=262144)
    assert shared.inflight_batches == 3


def test_triton_variants_take_config_ver_triton_and_in_process_default() -> None:
    """On an H100 the shipped configs give Triton more requests in flight; the in-process run keeps default's."""
    from dlrm_bench import configs
    from dlrm_bench.system import SystemInfo

    h100 = SystemInfo("Test CPU", 16, ("NVIDIA H100 80GB HBM3",))
    for scenario in ("Offline", "Server"):
        shared = configs.resolve(scenario, "default", "cuda", h100).settings
        extra = bt.triton_config(scenario, "cuda", h100, shared)
        assert extra["inflight_batches"] > shared.inflight_batches
        assert all(getattr(shared, key) != value for key, value in extra.items())
        triton = bt.variant_settings(shared, "triton-ranges", extra)
        assert triton == configs.resolve(scenario, "triton", "cuda", h100).settings


def test_diagnostics_line_reads_every_record_of_result_json() -> None:
    result = {"sut_batch_phases": {"dispatch_p99_ms": 2.5, "engine_p99_ms": 4.0, "longest_completion_gap_ms": 19.5},
              "interpreter_pauses": {"gc0_collections": 50, "gc1_collections": 4, "gc2_collections": 0,
                                     "gc_max_ms": 0.3, "stalls": 8, "stall_max_ms": 9.0},
              "host_cpu": {"steal_share": 0.021, "involuntary_switches": 1234.0}}
    line = bt.diagnostics_line(result)
    for part in ("dispatch 2.5", "engine 4.0 ms", "gap 19.5 ms", "gc 50/4/0 max 0.3 ms", "stalls 8 max 9.0 ms",
"host steal 2.1%", "preempted 1234x"):
        assert part in line
    assert "dispatch 0.0" in bt.diagnostics_line({})  # a run without records (AccuracyOnly, old logs)
