"""`dlrm-bench audit` (`make audit`, `make run_audit_test01`, `make run_audit_test05`): MLPerf compliance tests.

Each test is a PerformanceOnly LoadGen run driven by an `audit.config` that this module writes into the test's run
folder (`.../<Scenario>/<config_ver>/TEST01/`), next to LoadGen's logs, then checked against the plain runs of
the same scenario and config_ver (the "submission" runs: by default run now into the same log folder, or taken
from `--results <log folder>`). Verdicts go to `verify_accuracy.txt` / `verify_performance.txt`, whose last line
is `TEST PASS` or `TEST FAIL...`, as MLCommons' verification scripts write them.

TEST01, verify accuracy in performance mode: LoadGen logs the responses of a random subset of the performance
run's samples (`accuracy_log_sampling_target = 4096`: probability 4096 / expected samples, seed
`accuracy_log_rng_seed`). Accuracy passes when every logged sample's predictions equal, byte for byte, those of
the same sample in the AccuracyOnly run; where they differ (allowed non-determinism), MLPerf's fallback applies:
the AUC of the logged samples' predictions must be within 1% (default) / 0.1% (high_accuracy) of the AUC of the
AccuracyOnly predictions of the same samples. Performance passes within 10% of the plain performance run.

TEST05, vary the RNG seeds: the run uses other qsl / sample-index / schedule seeds; performance must be at least
95% of the plain run's (SingleStream: latency at most 5% higher, 20% when it is <= 0.2 ms).

Both need the two runs to be VALID (as MLPerf's scripts do). The metric is LoadGen's: Offline samples/s, Server
completed samples/s (with the same target latency), SingleStream the early-stopping 90th percentile latency.

LoadGen 6.0 (mlcommons-loadgen 6.0.17, checked): an audit.config passed to StartTestWithLogSettings is read for
`mode`, `accuracy_log_rng_seed`, `accuracy_log_sampling_target` (and the other plain keys), but its seed keys and
its `test05*` keys are ignored: TEST05 seeds only take effect through `TestSettings.test05 = True` and
`TestSettings.test05_*_rng_seed`. `apply_audit_settings` reads them from the audit.config and sets those fields,
and the verification checks LoadGen's effective settings in mlperf_log_detail.txt (the audit.config was found,
the sampling target, the seeds), so a config that did not take effect is a failure, not a silent pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from dlrm_bench.atomic import save_json, save_text
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.mlperf_rules import test05_seeds

TESTS = ("TEST01", "TEST05")
AUDIT_FILE = "audit.config"
TEST01_SAMPLING_TARGET = 4096
TEST01_ACCURACY_LOG_RNG_SEED = 720381539243781796
"""MLCommons' TEST01 audit.config value for DLRM."""
TEST01_PERF_TOLERANCE = 0.10
TEST05_PERF_TOLERANCE = 0.05
STREAM_RELAXED_TOLERANCE = 0.20
STREAM_RELAXED_BELOW_NS = 200_000
ACCURACY_DELTA = {"default": 0.01, "high_accuracy": 0.001}
"""TEST01 fallback: allowed relative AUC difference on the logged samples, per accuracy target."""
AUDIT_FOUND = "Found Audit Config file"
TEST05_FOUND = "Test05 flag detected"

_ENTRY = re.compile(r'"qsl_idx"\s*:\s*(\d+)\s*,\s*"data"\s*:\s*"([0-9A-Fa-f]*)"')


# ----------------------------------------------------------------------------------------------------------------
# audit.config


def audit_config_text(test: str) -> str:
    """The audit.config of a test (LoadGen's `model.scenario.key = value` format)."""
    head = [f"# MLPerf compliance {test}, written by dlrm-bench (LoadGen reads it from this run's folder).",
            "# Format: model.scenario.key = value; '*' matches any model or scenario.",
            "# mode: 0 = submission, 1 = accuracy, 2 = performance, 3 = find peak performance.",
            "*.*.mode = 2"]
    if test == "TEST01":
        body = [f"*.*.accuracy_log_rng_seed = {TEST01_ACCURACY_LOG_RNG_SEED}",
                f"*.*.accuracy_log_sampling_target = {TEST01_SAMPLING_TARGET}"]
    elif test == "TEST05":
        body = ["# LoadGen 6 ignores test05 keys in an audit.config; dlrm-bench reads them and sets",
                "# TestSettings.test05 / test05_*_rng_seed, which LoadGen then uses (see mlperf_log_detail.txt).",
                "*.*.test05 = 1"] + [f"*.*.test05_{key} = {value}" for key, value in test05_seeds().items()]
    else:
        raise UserError(f"unknown compliance test '{test}': choose from {', '.join(TESTS)}")
    return "\n".join(head + body) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Reading LoadGen's logs


def read_summary(path: Path) -> dict[str, str]:
    """'key : value' lines of mlperf_log_summary.txt (keys stripped; the first occurrence of each key wins)."""
    if not path.exists():
        raise UserError(f"{path}: LoadGen summary not found")
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in out:
            out[key.strip()] = value.strip()
    return out


SCORE_KEYS = {"Offline": [r"Samples per second"], "Server": [r"Completed samples per second"],
              "SingleStream": [r"(\* )?Early stopping 90(\.0)?th percentile estimate",
                               r"90(\.0)?th percentile latency \(ns\)"]}
"""The summary line holding each scenario's score (LoadGen 6 writes "90.0th"; older versions "90th")."""


def summary_score(summary: dict[str, str]) -> tuple[str, float | None]:
    """(metric name, value) of a summary: Offline samples/s, Server completed samples/s, SingleStream the
    early-stopping 90th percentile latency estimate (else the 90th percentile latency)."""
    for pattern in SCORE_KEYS.get(summary.get("Scenario", ""), []):
        for key, value in summary.items():
            if re.fullmatch(pattern, key):
                try:
                    return key.lstrip("* "), float(value)
                except ValueError:
                    break
    return "score", None


def read_accuracy_entries(path: Path, wanted: set[int] | None = None) -> list[tuple[int, str]]:
    """(qsl_idx, hex data) per entry of an mlperf_log_accuracy.json, in file order, read line by line (LoadGen
    writes one entry per line; a 90-GB-model accuracy log is ~1 GB of text). `wanted`: keep only these indices."""
    if not path.exists():
        raise UserError(f"{path}: accuracy log not found")
    out: list[tuple[int, str]] = []
    with open(path, errors="replace") as f:
        for line in f:
            m = _ENTRY.search(line)
            if m and (wanted is None or int(m.group(1)) in wanted):
                out.append((int(m.group(1)), m.group(2).upper()))
    if not out and path.stat().st_size > 4:  # not LoadGen's line layout: parse it as JSON
        try:
            entries = json.loads(path.read_text())
            out = [(int(e["qsl_idx"]), str(e["data"]).upper()) for e in entries
                   if wanted is None or int(e["qsl_idx"]) in wanted]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a LoadGen accuracy log ({exc})") from None
    return out


def _predictions(data: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(data), dtype="<f4")


# ----------------------------------------------------------------------------------------------------------------
# Verification


@dataclass
class Check:
    """A verdict and the text of its verify_*.txt file (whose last line is TEST PASS or TEST FAIL...)."""

    passed: bool
    lines: list[str]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _fail(lines: list[str], reason: str) -> Check:
    return Check(False, lines + [f"TEST FAIL: {reason}"])


def verify_performance(test: str, reference_dir: Path, test_dir: Path) -> Check:
    """TEST01: within 10% either way; TEST05: at least 95% (latency: at most 105%). Both runs must be VALID."""
    ref, new = read_summary(reference_dir / "mlperf_log_summary.txt"), read_summary(test_dir / "mlperf_log_summary.txt")
    scenario = ref.get("Scenario", "")
    metric, ref_score = summary_score(ref)
    _, test_score = summary_score(new)
    lines = [f"{test} verify performance", f"reference run: {reference_dir}", f"test run: {test_dir}",
             f"scenario = {scenario}", f"metric = {metric}", f"reference score = {ref_score}",
             f"test score = {test_score}"]
    lines += _error_warnings(ref, "reference") + _error_warnings(new, "test")
    if new.get("Scenario") != scenario:
        return _fail(lines, f"scenarios differ ({scenario} vs {new.get('Scenario')})")
    if ref.get("Result is") != "VALID":
        return _fail(lines, "reference results are invalid")
    if new.get("Result is") != "VALID":
        return _fail(lines, "test results are invalid")
    if scenario == "Server" and ref.get("target_latency (ns)") != new.get("target_latency (ns)"):
        return _fail(lines, "Server target latency mismatch")
    if not ref_score or test_score is None:
        return _fail(lines, f"no '{metric}' in the summaries")
    passed, rule = _compare(test, scenario, ref_score, test_score)
    lines += [f"ratio = {test_score / ref_score:.4f} ({rule})"]
    return Check(True, lines + ["TEST PASS"]) if passed else _fail(lines, "Test score invalid")


def _compare(test: str, scenario: str, ref: float, new: float) -> tuple[bool, str]:
    """Whether `new` is close enough to `ref` for this test and scenario, and the rule in words."""
    latency = scenario == "SingleStream"
    tol = TEST01_PERF_TOLERANCE if test == "TEST01" else TEST05_PERF_TOLERANCE
    if latency and ref <= STREAM_RELAXED_BELOW_NS:
        tol = STREAM_RELAXED_TOLERANCE
    if test == "TEST01":
        return ref * (1 - tol) < new < ref * (1 + tol), f"pass between {1 - tol:.2f} and {1 + tol:.2f}"
    if latency:
        return new < ref * (1 + tol), f"pass below {1 + tol:.2f} (latency)"
    return new > ref * (1 - tol), f"pass above {1 - tol:.2f}"


def _error_warnings(summary: dict[str, str], which: str) -> list[str]:
    errors = [k for k in summary if re.fullmatch(r"\d+ ERROR.*", k)]
    return [f"WARNING: {e} reported in {which} results" for e in errors]


def verify_accuracy(reference_log: Path, test_log: Path, labels: np.ndarray, offsets: np.ndarray,
                    config_ver: str) -> Check:
    """TEST01 accuracy: the logged samples' predictions against the AccuracyOnly run's for the same samples."""
    logged = read_accuracy_entries(test_log)
    wanted = {idx for idx, _ in logged}
    reference = dict(read_accuracy_entries(reference_log, wanted))
    matched = [(idx, data) for idx, data in logged if idx in reference]
    mismatched = [(idx, data) for idx, data in matched if data != reference[idx]]
    missing = len(logged) - len(matched)
    lines = ["TEST01 verify accuracy", f"reference (AccuracyOnly) log: {reference_log}", f"test log: {test_log}",
             f"num_perf_log_entries = {len(logged)}", f"num_perf_log_samples = {len(wanted)}",
             f"num_perf_log_qsl_idx_match = {len(matched)}", f"num_perf_log_data_mismatch = {len(mismatched)}",
             f"num_missing_qsl_idxs = {missing}"]
    if not logged:
        return _fail(lines, "the performance run logged no samples (was the audit.config read?)")
    if missing:
        return _fail(lines, f"{missing} logged samples are not in the AccuracyOnly log (another dataset?)")
    if not mismatched:
        return Check(True, lines + ["all logged predictions equal the AccuracyOnly run's, byte for byte",
                                    "TEST PASS"])
    return _accuracy_fallback(lines, logged, reference, mismatched, labels, offsets, config_ver)


def _accuracy_fallback(lines: list[str], logged: list[tuple[int, str]], reference: dict[int, str],
                       mismatched: list[tuple[int, str]], labels: np.ndarray, offsets: np.ndarray,
                       config_ver: str) -> Check:
    """MLPerf's rule for non-deterministic results: compare the AUC of the logged predictions with the AUC of the
    AccuracyOnly predictions of the same samples."""
    from dlrm_bench.accuracy import auc

    diffs = [np.abs(_predictions(d).astype(np.float64) - _predictions(reference[i])).max()
             if len(d) == len(reference[i]) else math.inf for i, d in mismatched]
    lines.append(f"max_abs_prediction_diff = {max(diffs):.3g}")
    samples = sorted({idx for idx, _ in logged})
    by_index = dict(logged)
    test = np.concatenate([_predictions(by_index[i]) for i in samples])
    base = np.concatenate([_predictions(reference[i]) for i in samples])
    rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in samples])
    if test.shape != base.shape or test.shape != rows.shape:
        return _fail(lines, "logged samples have the wrong number of predictions")
    tolerance = ACCURACY_DELTA["high_accuracy" if config_ver.startswith("high_accuracy") else "default"]
    try:
        test_auc, base_auc = auc(labels[rows], test), auc(labels[rows], base)
    except DataError as exc:
        return _fail(lines, f"cannot score the logged samples ({exc})")
    delta = abs(test_auc - base_auc) / base_auc
    lines += [f"baseline_auc (AccuracyOnly, same samples) = {100 * base_auc:.4f}%",
              f"compliance_auc (logged samples) = {100 * test_auc:.4f}%",
              f"relative AUC delta = {100 * delta:.4f}% (allowed {100 * tolerance:g}% for {config_ver})"]
    if delta <= tolerance:
        return Check(True, lines + ["predictions differ in their last bits (non-deterministic): passed by "
                                    "MLPerf's baseline-AUC rule", "TEST PASS"])
    return _fail(lines, "logged predictions differ from the AccuracyOnly run beyond the allowed AUC delta")


def verify_audit_took_effect(test: str, test_dir: Path) -> list[str]:
    """Problems (empty: none) with how LoadGen applied the audit.config, from the detail log."""
    from dlrm_bench.loadgen_logs import read_detail_log

    text = (test_dir / "mlperf_log_detail.txt").read_text(errors="replace")
    detail = read_detail_log(test_dir / "mlperf_log_detail.txt")
    problems = [] if AUDIT_FOUND in text else ["LoadGen did not find the audit.config"]
    if detail.get("effective_test_mode") != "PerformanceOnly":
        problems.append(f"the test ran in {detail.get('effective_test_mode')} mode, not PerformanceOnly")
    if test == "TEST01" and detail.get("effective_accuracy_log_sampling_target") != TEST01_SAMPLING_TARGET:
        problems.append(f"accuracy_log_sampling_target is {detail.get('effective_accuracy_log_sampling_target')}")
    if test == "TEST05":
        if TEST05_FOUND not in text:
            problems.append("LoadGen did not switch to the TEST05 seeds")
        for name, value in test05_seeds().items():
            if detail.get(f"effective_{name}") != value:
                problems.append(f"effective {name} is {detail.get(f'effective_{name}')}, expected {value}")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# The audit command


@dataclass
class Baseline:
    """The plain runs a test is compared with: run folders and result.json contents, by test mode."""

    dirs: dict[str, Path]
    results: dict[str, dict[str, Any]]


def parse_tests(text: str) -> list[str]:
    picked = []
    for item in (t.strip().upper() for t in text.split(",") if t.strip()):
        if item not in TESTS:
            raise UserError(f"unknown compliance test '{item}': choose from {', '.join(TESTS)}")
        picked.append(item)
    if not picked:
        raise UserError(f"no compliance test given: choose from {', '.join(TESTS)}")
    return picked


def _walk_results(folder: Path) -> Iterable[Path]:
    """Every result.json under `folder` (symlinked folders such as `latest` are not followed twice)."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if "result.json" in files:
            yield Path(root) / "result.json"


def _real(path: str | Path) -> str:
    return str(Path(path).resolve())


def find_baseline(folder: Path, ctx: Any, scenario: str, config_ver: str, mode: str, engine: str) -> Path:
    """The newest run folder under `folder` holding a plain `mode` run of this scenario, config_ver, engine,
    dataset and model."""
    found = []
    same = (scenario, config_ver, mode, engine, _real(ctx.meta.directory), _real(ctx.model_path))
    for path in _walk_results(Path(folder).resolve()):
        r = json.loads(path.read_text())
        key = (r.get("scenario"), r.get("config_ver"), r.get("test_mode"), r.get("engine"),
               _real(r.get("dataset_dir", "")), _real(r.get("model_path", "")))
        if key == same and not r.get("compliance_test"):
            found.append(path.parent)
    if not found:
        raise UserError(f"no {scenario} {config_ver} {mode} run of the {engine} engine on {ctx.meta.directory} with "
                        f"{ctx.model_path} under {folder}: run it first (`make run RUN_ARGS=...`) or drop --results")
    return sorted(found)[-1]


def baselines(ctx: Any, engines: Any, args: argparse.Namespace, scenario: str, config_ver: str,
              tests: list[str]) -> Baseline:
    """The PerformanceOnly run (and the AccuracyOnly run, for TEST01): found under --results, or run now."""
    from dlrm_bench.harness import runner
    from dlrm_bench.harness.logs import run_dir

    modes = ["PerformanceOnly"] + (["AccuracyOnly"] if "TEST01" in tests else [])
    dirs: dict[str, Path] = {}
    results: dict[str, dict[str, Any]] = {}
    for mode in modes:
        if args.results:
            engine = runner.resolve_run_settings(args, scenario, config_ver, ctx.system).settings.engine
            dirs[mode] = find_baseline(args.results, ctx, scenario, config_ver, mode, engine)
            results[mode] = json.loads((dirs[mode] / "result.json").read_text())
            print(f"--- {scenario} {config_ver} {mode}: using {dirs[mode]}", flush=True)
        else:
            results[mode] = runner.run_one(ctx, engines, args, scenario, config_ver, mode)
            dirs[mode] = run_dir(ctx.root, ctx.system.system_id, scenario, config_ver, mode)
    return Baseline(dirs, results)


def run_test(ctx: Any, engines: Any, args: argparse.Namespace, scenario: str, config_ver: str, test: str,
             base: Baseline) -> dict[str, Any]:
    """Write the test's audit.config, run it, verify it, and return its result.json (with the verdicts)."""
    from dlrm_bench.harness import runner
    from dlrm_bench.harness.logs import run_dir

    out = run_dir(ctx.root, ctx.system.system_id, scenario, config_ver, test)
    save_text(out / AUDIT_FILE, audit_config_text(test))
    result = runner.run_one(dataclasses.replace(ctx, audit=out / AUDIT_FILE), engines, args, scenario, config_ver,
                            "PerformanceOnly", label=test)
    checks = {"performance": verify_performance(test, base.dirs["PerformanceOnly"], out)}
    if test == "TEST01":
        labels = np.asarray(ctx.split.labels)
        checks["accuracy"] = verify_accuracy(base.dirs["AccuracyOnly"] / "mlperf_log_accuracy.json",
                                             out / "mlperf_log_accuracy.json", labels, ctx.offsets, config_ver)
    problems = verify_audit_took_effect(test, out)
    for name, check in checks.items():
        if problems:
            check.lines[-1:] = [f"audit.config problem: {p}" for p in problems] + [
                f"TEST FAIL: the {AUDIT_FILE} did not take effect"]
            check.passed = False
        save_text(out / f"verify_{name}.txt", check.text())
    result.update({"compliance_passed": all(c.passed for c in checks.values()),
                   "compliance_checks": {name: c.passed for name, c in checks.items()},
                   "compliance_verdicts": {name: c.lines[-1] for name, c in checks.items()},
                   "compliance_baseline": {mode: str(d) for mode, d in base.dirs.items()}})
    save_json(out / "result.json", result)
    for name, check in checks.items():
        print(f"{test} {scenario} {config_ver} {name}: {check.lines[-1]}  ({out / f'verify_{name}.txt'})",
              flush=True)
    return result


def main(args: argparse.Namespace) -> int:
    """`dlrm-bench audit [--test TEST01,TEST05] [--results LOG_DIR] <the flags of run>`; 0 when every test
    passes, 1 otherwise."""
    from dlrm_bench import configs
    from dlrm_bench.harness import runner

    if args.benchmarks.lower() != "dlrm":
        raise UserError(f"unknown benchmark '{args.benchmarks}': this system runs only dlrm")
    tests = parse_tests(args.test)
    scenarios = configs.parse_choices(args.scenarios, configs.SCENARIOS, "scenario")
    config_vers = configs.parse_choices(args.config_ver, configs.CONFIG_VERS, "config_ver")
    if args.results is not None and not Path(args.results).is_dir():
        raise UserError(f"--results {args.results}: not a folder")
    if args.test_mode != "PerformanceOnly,AccuracyOnly":
        print(f"note: audit ignores --test_mode={args.test_mode}: the tests are performance runs, compared with "
              f"the PerformanceOnly (and, for TEST01, AccuracyOnly) runs", flush=True)
    runner.check_run_settings(args, scenarios, config_vers)
    ctx = runner.make_context(argparse.Namespace(**{**vars(args), "audit": None}))

    def runs(engines: "runner.EngineCache") -> Iterator[dict[str, Any]]:
        for config_ver in config_vers:
            for scenario in scenarios:
                base = baselines(ctx, engines, args, scenario, config_ver, tests)
                yield from (r for r in base.results.values() if not args.results)
                yield from (run_test(ctx, engines, args, scenario, config_ver, t, base) for t in tests)

    results = runner.run_and_report(ctx, runs)
    return 0 if all(r.get("compliance_passed", True) for r in results) else 1
