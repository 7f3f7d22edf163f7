"""Which runs of a log tree go into a submission (the newest of each kind per system, benchmark and scenario) and
what about them cannot be submitted: INVALID or short runs, missing accuracy or compliance runs, failed checks,
compliance tests verified against other runs, data other than the real Criteo Terabyte set in the closed division."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrm_bench.errors import DataError, UserError
from dlrm_bench.json_files import read_json_object
from dlrm_bench.loadgen_logs import read_detail_log
from dlrm_bench.submission import rules
from dlrm_bench.submission.tree import BENCHMARKS, SCENARIOS, TESTS, run_sut, system_name

KINDS = ("PerformanceOnly", "AccuracyOnly", *TESTS)


@dataclass(frozen=True)
class Run:
    folder: Path
    result: dict[str, Any]

    @property
    def kind(self) -> str:
        """PerformanceOnly, AccuracyOnly, TEST01 or TEST05."""
        return self.result.get("compliance_test") or self.result.get("test_mode", "?")


@dataclass
class Selection:
    """The runs staged for one (system folder, benchmark, scenario), by kind."""

    system: str
    benchmark: str
    scenario: str
    runs: dict[str, Run] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.system}/{self.benchmark}/{self.scenario}"

    def any_run(self) -> Run:
        return next(iter(self.runs.values()))


def _load(path: Path) -> dict[str, Any]:
    result = read_json_object(path, "result.json")
    missing = [k for k in ("scenario", "config_ver", "test_mode", "system") if k not in result]
    if missing:
        raise DataError(f"{path}: not a dlrm-bench result.json (no '{missing[0]}')")
    return result


def find_runs(log_dir: Path) -> tuple[list[Selection], list[str]]:
    """The newest run of each kind per (system, benchmark, scenario) under `log_dir`, and notes on what was left
    out (FAILED runs are never staged; SingleStream is not a v3.0 DLRM scenario)."""
    log_dir = log_dir.resolve()
    if not log_dir.is_dir():
        raise UserError(f"{log_dir}: no such log folder (make run writes build/logs; --log-dir names another)")
    found: dict[tuple[str, str, str], Selection] = {}
    left_out: dict[str, int] = {}
    for root, dirs, files in os.walk(log_dir):
        dirs.sort()  # timestamp folders sort oldest first, so later runs replace earlier ones
        if "result.json" not in files:
            continue
        result = _load(Path(root) / "result.json")
        run = Run(Path(root), result)
        why = ("FAILED" if result.get("result") == "FAILED" else None) or \
            (f"{result['scenario']} (not a v3.0 DLRM scenario)" if result["scenario"] not in SCENARIOS else None) or \
            (f"config_ver {result['config_ver']}" if result["config_ver"] not in BENCHMARKS else None) or \
            (f"{run.kind.rstrip('_0123456789')} (not a submission run)" if run.kind not in KINDS else None)
        if why:
            left_out[why] = left_out.get(why, 0) + 1
            continue
        key = (system_name(result["system"], result["config_ver"], run_sut(result)), BENCHMARKS[result["config_ver"]],
               result["scenario"])
        found.setdefault(key, Selection(*key)).runs[run.kind] = run
    if not found:
        raise UserError(f"{log_dir}: no Offline or Server runs (make run, then make audit)")
    return [found[key] for key in sorted(found)], [f"left out {n} {why} runs" for why, n in left_out.items()]


def _perf_problems(sel: Selection) -> list[str]:
    run = sel.runs.get("PerformanceOnly")
    if run is None:
        return [f"{sel.label}: no PerformanceOnly run (make run)"]
    return rules.performance_problems(run.folder / "mlperf_log_detail.txt")


def _accuracy_problems(sel: Selection) -> list[str]:
    run = sel.runs.get("AccuracyOnly")
    if run is None:
        return [f"{sel.label}: no AccuracyOnly run (make run with --test_mode=AccuracyOnly)"]
    r = run.result
    if r.get("accuracy_passed") is not True:
        return [f"{run.folder / 'accuracy.txt'}: accuracy FAIL: AUC {r.get('auc')} against target "
                f"{r.get('accuracy_target_auc')} ({r.get('accuracy_rule')} rule)"]
    return []


def _compliance_problems(sel: Selection, closed: bool) -> list[str]:
    found = []
    for test in TESTS:
        run = sel.runs.get(test)
        if run is None:
            found += [f"{sel.label}: no {test} run (make audit)"] if closed else []
            continue
        if run.result.get("compliance_passed") is not True:
            found.append(f"{run.folder}: {test} verdicts {run.result.get('compliance_verdicts')}, expected TEST PASS")
        found += rules.performance_problems(run.folder / "mlperf_log_detail.txt", test05=test == "TEST05")
        for mode, folder in run.result.get("compliance_baseline", {}).items():
            staged = sel.runs.get(mode)
            if staged is None or Path(folder).resolve() != staged.folder.resolve():
                found.append(f"{run.folder}: {test} was verified against {folder}, not the staged {mode} run "
                             f"({staged.folder if staged else 'none'}): run make audit again")
    return found


def _network_problems(sel: Selection, division: str) -> list[str]:
    """The network division takes only `--sut network` runs, whose LoadGen SUT name says "Network SUT"; the closed
    division takes no run over the network; row ranges (`network_ranges`) are open division only."""
    sut = run_sut(sel.any_run().result)
    if sut == "network_ranges" and division != "open":
        return [f"{sel.label}: --sut network_ranges sends row ranges, not the queries' data: open division only"]
    if division == "closed" and sut != "local":
        return [f"{sel.label}: a run through the network SUT: stage it in the network division"]
    if division != "network":
        return []
    if sut != "network":
        return [f"{sel.label}: a {sut} SUT run: the network division takes only --sut network runs"]
    return [f"{run.folder}: sut_name '{name}' lacks 'Network SUT' (MLPerf's network rule)"
            for run in sel.runs.values()
            if "Network SUT" not in (name := str(read_detail_log(run.folder / "mlperf_log_detail.txt").get("sut_name")))]


def problems(selections: list[Selection], division: str) -> list[str]:
    """Every reason the selected runs cannot be submitted in `division` (empty: none). The network division
    follows the closed division's rules."""
    closed = division in ("closed", "network")
    found: list[str] = []
    for sel in selections:
        found += _perf_problems(sel) + _accuracy_problems(sel) + _compliance_problems(sel, closed)
        found += _network_problems(sel, division)
        dataset = sel.any_run().result.get("dataset")
        if closed and dataset != "terabyte":
            found.append(f"{sel.label}: dataset {dataset}: the {division} division needs the real Criteo Terabyte data")
    if closed:
        present = {(s.system, s.benchmark, s.scenario) for s in selections}
        for system, benchmark in sorted({(s.system, s.benchmark) for s in selections}):
            found += [f"{system}/{benchmark}: no {scenario} runs (the {division} division requires Offline and Server)"
                      for scenario in SCENARIOS if (system, benchmark, scenario) not in present]
    return found
