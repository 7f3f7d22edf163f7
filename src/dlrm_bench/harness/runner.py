"""`dlrm-bench run`: every (config_ver, scenario, test_mode) asked for, through LoadGen, into the log tree."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import mlperf_loadgen as lg
import numpy as np

from dlrm_bench import accuracy
from dlrm_bench.atomic import save_json, save_npy, save_text
from dlrm_bench import configs
from dlrm_bench.criteo.dataset import DatasetMeta, Split, open_partition, open_split
from dlrm_bench.engines import create_engine, pick_engine
from dlrm_bench.engines.base import Engine
from dlrm_bench.errors import UserError
from dlrm_bench.harness import batch_stamps
from dlrm_bench.harness.audit_config import apply_audit_settings
from dlrm_bench.harness.cpu_affinity import apply_cpu_affinity
from dlrm_bench.harness.host_stats import HostSample, host_delta
from dlrm_bench.harness.loadgen_settings import (Overrides, build_test_settings, describe_test_settings,
                                                 load_rules, log_settings)
from dlrm_bench.harness.logs import make_run_root, remove_if_empty, run_dir, update_latest
from dlrm_bench.harness.qsl import SampleLibrary
from dlrm_bench.harness.qdl import QueryDispatchSUT, make_system
from dlrm_bench.harness.sut import BatchingSUT, Counters, batch_fill_note, batch_pieces_note
from dlrm_bench.inputs import resolve_inputs
from dlrm_bench.loadgen_logs import loadgen_metrics, mark_failed, read_detail_log
from dlrm_bench.mlperf_rules import judged_by_absolute_auc, round_name, target_fraction
from dlrm_bench.paths import configs_dir, logs_dir
from dlrm_bench.plots import save_timeline, write_run_plots
from dlrm_bench.quant.artifacts import check_int8_artifacts
from dlrm_bench.report import outcome, results_table
from dlrm_bench.settings import Settings
from dlrm_bench.system import SystemInfo, detect_system
from dlrm_bench.triton_server import create_network_engine, create_served_engine
from dlrm_bench.user_settings import user_settings_path

TICK_S = 10.0
"""While LoadGen runs, a line this often says how many samples were answered."""
FAILURE_GRACE_S = 5.0
"""After the engine's first failure, how long LoadGen's test may go on before the run is ended (ticking)."""
PAUSES_FILE = "interpreter_pauses.npy"
"""Per run: every garbage collection and watchdog stall of the test (QuietInterpreter.timeline), on the clock of
sut_batches.npy, so a slow stretch of batches can be matched to what the interpreter did then."""


@dataclass
class RunContext:
    """What every single run of one invocation shares."""

    system: SystemInfo
    meta: DatasetMeta
    model_path: Path
    split: Split
    offsets: np.ndarray
    root: Path
    overrides: Overrides
    rules: dict[str, Any]
    audit: Path | None


class RunFailed(UserError):
    """A run that did not complete (the engine or its server failed, or it was interrupted); `result` is what its
    result.json says."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


class EngineCache:
    """One engine per (engine name, config_ver), reused across scenarios and test modes, bound to the split."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.engines: dict[tuple[str, ...], Engine] = {}

    def get(self, name: str, config_ver: str, settings: Settings) -> Engine:
        key = (name, config_ver, settings.sut, settings.network_endpoints)
        if key not in self.engines:
            if settings.sut != "local":  # `dlrm-bench serve` nodes behind LoadGen's QDL (docs/network.md)
                engine = create_network_engine(settings, self.ctx.meta, self.ctx.model_path)
            elif config_ver.endswith("triton"):  # the engine behind a Triton Inference Server (triton_server/)
                engine = create_served_engine(name, self.ctx.model_path, self.ctx.meta, settings,
                                              self.ctx.root / "triton" / f"{name}-{config_ver}")
            else:
                engine = create_engine(name, self.ctx.model_path, self.ctx.meta, settings)
            engine.load(self.ctx.split)
            engine.warmup()
            print(f"engine: {engine.name} on {engine.device}", flush=True)
            self.engines[key] = engine
        return self.engines[key]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()


@contextlib.contextmanager
def ticking(label: str, counters: Counters, interval: float = TICK_S,
            on_failure: Callable[[str], None] | None = None, grace_s: float = FAILURE_GRACE_S) -> Iterator[None]:
    """While entered, print every `interval` seconds how long the test has run and how many samples were answered
    (LoadGen itself says nothing until it ends). When the engine has failed (counters.errors) and the test has not
    ended `grace_s` later, call `on_failure(first error)`: LoadGen cannot be stopped mid-test, and a Server test
    would go on for its whole duration on answers that are zeros."""
    stop, start = threading.Event(), time.perf_counter()

    def loop() -> None:
        last, failed_at = start, None
        while not stop.wait(min(interval, 0.25)):
            now = time.perf_counter()
            if counters.errors and on_failure is not None:
                failed_at = failed_at or now
                if now - failed_at >= grace_s:
                    on_failure(counters.errors[0])
                    return
            if now - last >= interval:
                last, done = now, counters.samples
                state = f"{done:,} samples answered ({done / (now - start):,.0f}/s)" if done else \
                    "no query from LoadGen yet"
                print(f"{label}: {now - start:.0f} s, {state}", flush=True)

    thread = threading.Thread(target=loop, name="run-ticker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_loadgen(ctx: RunContext, engine: Engine, scenario: str, mode: str, settings: Settings,
                out: Path, on_failure: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One LoadGen test; returns the measured numbers. `on_failure`: see ticking."""
    qsl_count = min(int(ctx.rules["performance_sample_count"]), len(ctx.offsets) - 1)
    ts = build_test_settings(scenario, mode, settings, len(ctx.offsets) - 1, ctx.overrides, ctx.rules)
    if ctx.audit:
        apply_audit_settings(ts, ctx.audit, scenario)  # the test05 keys LoadGen 6 does not take from the file
    audit = ctx.audit if ctx.audit else out / "no-audit.config"
    with SampleLibrary(ctx.split, ctx.offsets, qsl_count) as qsl, make_system(scenario, engine, qsl, settings) as sut:
        note = batch_fill_note(sut.policy.want_pairs, 1e3 * sut.policy.max_wait_s, ts.server_target_qps,
                               qsl.mean_pairs_per_sample) if scenario == "Server" and engine.pads_batches else None
        if note:
            print(note, flush=True)
        pieces = batch_pieces_note(sut.policy.batch_pairs, engine.max_batch_pairs) \
            if isinstance(sut, BatchingSUT) else None
        if pieces:
            print(f"{scenario}: {pieces}", flush=True)
        t0 = time.perf_counter()
        host_before = HostSample()
        with ticking(f"{scenario} {mode}", sut.counters, on_failure=on_failure):
            lg.StartTestWithLogSettings(sut.handle, qsl.handle, ts, log_settings(out), str(audit))
        host_cpu = host_delta(host_before, HostSample())
        wall = time.perf_counter() - t0
    counters = sut.counters
    save_timeline(out, counters.timeline, t0)
    sut_phases = batch_stamps.summarize(batch_stamps.save(out, counters.stamps, t0))
    save_npy(out / PAUSES_FILE, sut.interpreter.timeline(t0))
    if counters.errors:
        raise UserError(f"the {engine.name} engine failed during the test ({len(counters.errors)} batches "
                        f"unanswered, completed with zeros): {counters.errors[0]}")
    metrics = loadgen_metrics(read_detail_log(out / "mlperf_log_detail.txt"), scenario)
    if isinstance(sut, QueryDispatchSUT):
        metrics.update(sut.report())
    if metrics["result_validity"] is None and mode == "PerformanceOnly":
        raise UserError(f"{out / 'mlperf_log_detail.txt'} holds no LoadGen result (is the disk full?)")
    pairs_per_sample = counters.pairs / max(counters.samples, 1)
    sps = metrics["samples_per_second"]
    metrics.update({
        "pairs_per_second": sps * pairs_per_sample if sps is not None else None,
        "pairs_per_sample": pairs_per_sample,
        "samples_processed": counters.samples,
        "pairs_processed": counters.pairs,
        "wall_seconds": wall,
        "t0_monotonic_s": t0,  # the run's time zero on CLOCK_MONOTONIC (perf_counter), for outside samplers
        "loadgen_settings": describe_test_settings(ts),
        "shortened_run": ts.min_duration_ms < int(ctx.rules["min_duration_ms"]),
        "sut_batch_phases": sut_phases,
        "interpreter_pauses": sut.interpreter.summary(t0),
        "host_cpu": host_cpu,
    })
    if mode == "AccuracyOnly":
        for key in ("samples_per_second", "pairs_per_second", "result_valid", "result_validity", "invalid_reason"):
            metrics[key] = None
    return metrics


def score_accuracy(ctx: RunContext, out: Path, config_ver: str) -> dict[str, Any]:
    value, pairs, samples = accuracy.score_log(out / "mlperf_log_accuracy.json", ctx.split, ctx.offsets)
    ref = accuracy.reference_auc(ctx.model_path, ctx.meta, ctx.split)
    result = accuracy.AccuracyResult(value, pairs, samples, ref, target_fraction(config_ver),
                                     judged_by_absolute_auc(ctx.meta.name))
    save_text(out / "accuracy.txt", result.text())
    return {"auc": result.auc, "auc_fp32_reference": ref, "auc_ratio": result.ratio,
            "accuracy_target": result.target_fraction, "accuracy_target_auc": result.target_auc,
            "accuracy_rule": result.rule, "accuracy_passed": result.passed,
            "accuracy_pairs": pairs, "accuracy_samples": samples}


def resolve_run_settings(args: argparse.Namespace, scenario: str, config_ver: str,
                         system: SystemInfo) -> configs.Resolved:
    """The settings of one run: the config files and --set for the engine that will run (--engine, else the
    config's if this machine has it, else the fastest it has)."""
    overrides = configs.parse_overrides(getattr(args, "settings", []))
    user = None if getattr(args, "no_user_settings", False) else user_settings_path(system.system_id)
    resolved = configs.resolve(scenario, config_ver, args.engine, system, args.config, overrides, user)
    name = pick_engine(args.engine, resolved.settings.engine)
    if name != resolved.settings.engine:
        resolved = configs.resolve(scenario, config_ver, name, system, args.config, overrides, user)
    return resolved


def check_run_settings(args: argparse.Namespace, scenarios: list[str], config_vers: list[str]) -> None:
    """Every config file, and the settings of every run asked for, checked before anything loads."""
    configs.check_all_config_files()
    system, overrides = detect_system(), configs.parse_overrides(getattr(args, "settings", []))
    for scenario in scenarios:
        for config_ver in config_vers:
            configs.resolve(scenario, config_ver, args.engine, system, args.config, overrides)


def run_one(ctx: RunContext, engines: EngineCache, args: argparse.Namespace, scenario: str, config_ver: str,
            mode: str, label: str | None = None) -> dict[str, Any]:
    """One LoadGen test into its run folder (named `label`, e.g. TEST01, instead of `mode` when given)."""
    resolved = resolve_run_settings(args, scenario, config_ver, ctx.system)
    settings, name = resolved.settings, resolved.settings.engine
    engine = engines.get(name, config_ver, settings)  # first: a GPU engine's driver then has served interrupts
    affinity = apply_cpu_affinity(settings.cpu_affinity) if settings.cpu_affinity is not None else None
    out = run_dir(ctx.root, ctx.system.system_id, scenario, config_ver, label or mode)
    print(f"--- {scenario} {config_ver} {label or mode} ({name} engine) -> {out}", flush=True)
    if " + " in resolved.source:
        print(f"settings: {resolved.source}", flush=True)
    result: dict[str, Any] = {
        "scenario": scenario, "config_ver": config_ver, "test_mode": mode, "engine": name,
        "device": engine.device, "system": ctx.system.system_id, "system_description": ctx.system.describe(),
        "dataset": ctx.meta.name, "dataset_dir": str(ctx.meta.directory), "model_path": str(ctx.model_path),
        "auc": None, "auc_fp32_reference": None, "auc_ratio": None, "accuracy_target": target_fraction(config_ver),
        "accuracy_passed": None, "system_config": resolved.system, "settings_source": resolved.source,
        "settings": settings.as_dict(),
        "engine_info": engine.describe(), "cpu_affinity": affinity, "mlperf_round": round_name(),
    }
    if label:  # a compliance test (its audit.config given), or a named run such as a find-peak step
        result["compliance_test" if ctx.audit else "run_label"] = label

    def measure() -> None:
        failed = functools.partial(end_failed_run, ctx, engines, out, result, what, f"the {name} engine failed")
        result.update(run_loadgen(ctx, engine, scenario, mode, settings, out, failed))
        if mode == "AccuracyOnly":
            result.update(score_accuracy(ctx, out, config_ver))
        result["result"] = outcome(result)
        save_json(out / "result.json", result)

    what = f"{scenario} {config_ver} {label or mode}"
    run_or_mark_failed(measure, out, result, what)
    try:
        write_run_plots(out, result)
    except OSError as exc:
        print(f"note: no plots for {out} ({exc.strerror or exc})", flush=True)
    return result


def run_or_mark_failed(measure: Callable[[], None], out: Path, result: dict[str, Any], what: str) -> None:
    """Call `measure`; if it fails (an engine error, an unreadable or unwritable log, Ctrl-C), mark the run's
    folder FAILED (save_failed) and raise RunFailed (KeyboardInterrupt as it is)."""
    try:
        measure()
    except KeyboardInterrupt:
        save_failed(out, result, "interrupted")
        raise
    except (UserError, OSError) as exc:
        reason = str(exc) if isinstance(exc, UserError) else f"cannot write {exc.filename or out}: {exc.strerror or exc}"
        save_failed(out, result, reason)
        raise RunFailed(f"{what} FAILED: {reason} (marked in {out})", result) from None


def end_failed_run(ctx: RunContext, engines: EngineCache, out: Path, result: dict[str, Any], what: str,
                   cause: str, error: str) -> None:
    """Mark the run FAILED, stop the engines and end the process (status 2): the engine failed mid-test and LoadGen
    cannot stop a test early (ticking's on_failure)."""
    reason = f"{cause} during the test: {error}"
    save_failed(out, result, reason)
    print(f"dlrm-bench: error: {what} FAILED: {reason} (marked in {out}); LoadGen cannot stop a test early, so the "
          f"process ends here", file=sys.stderr, flush=True)
    with contextlib.suppress(BaseException):
        engines.close()
        update_latest(ctx.root.parent, ctx.root)
    os._exit(2)


def save_failed(out: Path, result: dict[str, Any], reason: str) -> None:
    """Mark a run that did not complete: result.json says FAILED and why; LoadGen's logs get a .FAILED suffix."""
    result.update({"result": "FAILED", "failure": reason, "failed_logs": mark_failed(out)})
    try:
        save_json(out / "result.json", result)
    except OSError as exc:  # e.g. the disk is full: the renamed logs still say FAILED
        print(f"note: cannot write {out / 'result.json'} ({exc.strerror})", flush=True)


def quick_run_overrides(dataset: str, overrides: Overrides) -> Overrides:
    """On the built-in synthetic datasets, short LoadGen durations unless the flags say otherwise
    (configs/dlrm/quick_run.json); said in one line."""
    quick = json.loads((configs_dir() / "dlrm" / "quick_run.json").read_text())
    if dataset not in quick["datasets"]:
        return overrides
    print(f"synthetic dataset: short LoadGen runs ({quick['min_duration_s']} s minimum; pass --min_duration 600 "
          f"for MLPerf's duration)", flush=True)
    return dataclasses.replace(
        overrides,
        min_duration_s=overrides.min_duration_s if overrides.min_duration_s is not None else quick["min_duration_s"],
        min_query_count=overrides.min_query_count,
        quick_min_query_count=quick["min_query_count"])


def make_context(args: argparse.Namespace) -> RunContext:
    system = detect_system()
    print(f"system: {system.describe()} -> {system.system_id}", flush=True)
    meta, model_path = resolve_inputs(args.dataset, args.dataset_dir, args.model, prepare=True)
    split = open_split(meta.directory / "test")
    offsets = open_partition(meta.directory / "test", len(split))
    print(f"dataset: {meta.name} ({len(split):,} pairs, {len(offsets) - 1:,} samples) from {meta.directory}; "
          f"model: {model_path}", flush=True)
    if getattr(args, "verify", False):
        check_int8_artifacts(model_path, verify=True)
        print(f"engine files of {model_path}: full sha256 verified", flush=True)
    root = make_run_root(Path(args.log_dir) if args.log_dir else logs_dir())
    overrides = Overrides(args.min_duration, args.min_query_count, args.server_target_qps, args.offline_expected_qps)
    overrides = quick_run_overrides(meta.name, overrides)
    audit = Path(args.audit).resolve() if getattr(args, "audit", None) else None
    if audit is not None and not audit.exists():
        raise UserError(f"{audit}: audit config not found")
    return RunContext(system, meta, model_path, split, offsets, root, overrides, load_rules(), audit)


def run_and_report(ctx: RunContext, runs: Callable[[EngineCache], Iterable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Collect the results `runs` yields (engines built once, closed at the end), point build/logs/latest at this
    run folder when anything ran (also after an error), and print the results table."""
    engines = EngineCache(ctx)
    results: list[dict[str, Any]] = []
    failure: RunFailed | None = None
    try:
        for result in runs(engines):
            results.append(result)
    except RunFailed as exc:
        failure = exc
        results.append(exc.result)
    finally:
        engines.close()
        if results:
            update_latest(ctx.root.parent, ctx.root)
        else:
            remove_if_empty(ctx.root)
    print()
    print(results_table(results))
    print(f"\nlogs: {ctx.root}")
    if failure is not None:
        raise UserError(str(failure))
    return results


def main(args: argparse.Namespace) -> int:
    if args.benchmarks.lower() != "dlrm":
        raise UserError(f"unknown benchmark '{args.benchmarks}': this system runs only dlrm")
    scenarios = configs.parse_choices(args.scenarios, configs.SCENARIOS, "scenario")
    config_vers = configs.parse_choices(args.config_ver, configs.CONFIG_VERS, "config_ver")
    modes = configs.parse_choices(args.test_mode, configs.TEST_MODES, "test_mode")
    check_run_settings(args, scenarios, config_vers)  # bad config files or --set stop the run before anything loads
    ctx = make_context(args)

    def runs(engines: EngineCache) -> Iterator[dict[str, Any]]:
        for config_ver in config_vers:
            for scenario in scenarios:
                for mode in modes:
                    yield run_one(ctx, engines, args, scenario, config_ver, mode)

    results = run_and_report(ctx, runs)
    failed = [r for r in results if r["test_mode"] == "AccuracyOnly" and r.get("accuracy_passed") is False]
    return 1 if failed else 0
