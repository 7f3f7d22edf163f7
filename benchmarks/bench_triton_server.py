"""Triton Inference Server against in-process: Offline throughput and Server p99, same engine, same machine, one run.

Every variant runs the project's own LoadGen path (harness.runner.run_loadgen: the same QSL, SUTs and settings):
`in-process` (the engine in this process), `triton-ranges` (the engine behind tritonserver; requests carry row
ranges of the server's memory-mapped test split) and `triton-rows` (requests carry the gathered float32/int32
rows). The variants alternate within each repeat, so a noisy neighbour slows them alike; the table gives medians
and the ratio to in-process. Server runs all use one target QPS (default: --server-load x the in-process
engine's measured throughput), so their p99 latencies compare directly; a comma list of targets sweeps them and
reports each variant's highest VALID target (MLPerf's Server result). `--sequential` keeps one engine on the
device at a time (all runs of one variant, then the next) instead of loading every variant at once. As with
`dlrm-bench run`, the in-process variant takes config_ver `default`'s settings and the Triton variants
config_ver `triton`'s (e.g. more requests in flight); --triton-set adds to the latter.

    .venv/bin/python benchmarks/bench_triton_server.py                          # synthetic-tiny if built, else a fixture
    .venv/bin/python benchmarks/bench_triton_server.py --engine cpu --repeats 3 --offline-duration 20 --server-duration 30
    .venv/bin/python benchmarks/bench_triton_server.py --dataset-dir D --model M --variants in-process,triton-ranges
    .venv/bin/python benchmarks/bench_triton_server.py --set triton_trace=true ...   # + where each request's time goes

Writes build/bench/bench_triton_server.json (or --out) and the LoadGen logs under build/bench/triton_logs/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.conftest (fixture dataset writer)
sys.path.insert(0, str(REPO / "benchmarks"))

from dlrm_bench.cli import _parser as cli_parser  # noqa: E402
from bench_inputs import pick_inputs  # noqa: E402
from dlrm_bench.engines import create_engine  # noqa: E402
from dlrm_bench.engines.base import Engine  # noqa: E402
from dlrm_bench import configs  # noqa: E402
from dlrm_bench.harness import runner  # noqa: E402
from dlrm_bench.harness.loadgen_settings import Overrides  # noqa: E402
from dlrm_bench.paths import scratch_path  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402
from dlrm_bench.triton_server.client import TritonEngine  # noqa: E402
from dlrm_bench.triton_server.trace import format_summary, summarize as summarize_trace  # noqa: E402

VARIANTS = ("in-process", "triton-ranges", "triton-rows")


def make_context(data: Path, model: Path, log_dir: Path) -> runner.RunContext:
    """The runner's context, built from `dlrm-bench run`'s own defaults."""
    ns = cli_parser().parse_args(["run", "--dataset-dir", str(data), "--model", str(model), "--log_dir",
                                  str(log_dir)])
    return runner.make_context(ns)


def engine_rate(engine: Engine, pairs: int, mean_pairs: float) -> float:
    """samples/s of `engine` predicting `pairs` contiguous pairs (a quick throughput probe)."""
    engine.predict_ranges(np.array([0]), np.array([min(pairs, 4096)]))
    start = time.perf_counter()
    engine.predict_ranges(np.array([0]), np.array([pairs]))
    return pairs / (time.perf_counter() - start) / mean_pairs


def rotated(items: list[str], shift: int) -> list[str]:
    """`items` rotated by `shift`: each variant runs first in some repeat (slow drifts in load hit all alike)."""
    shift %= max(1, len(items))
    return items[shift:] + items[:shift]


def triton_config(scenario: str, engine: str, system: Any, shared: Settings) -> dict[str, Any]:
    """What config_ver `triton` sets differently from `default` for this system (e.g. more requests in
    flight): the Triton variants run with it, the in-process one with `default`, as `dlrm-bench run` would."""
    triton = configs.resolve(scenario, "triton", engine, system).settings.as_dict()
    base = shared.as_dict()
    return {key: value for key, value in triton.items() if base[key] != value}


def variant_settings(settings: Settings, variant: str, triton_sets: dict[str, Any]) -> Settings:
    """A variant's settings: the Triton variants add `triton_sets` (--triton-set) to the shared ones."""
    return settings if variant == "in-process" else settings.with_values(triton_sets, "--triton-set")


def build_engines(variants: list[str], name: str, ctx: runner.RunContext, settings: Settings,
                  workdir: Path, triton_sets: dict[str, Any] | None = None) -> dict[str, Engine]:
    engines: dict[str, Engine] = {}
    for variant in variants:
        if variant == "in-process":
            engine: Engine = create_engine(name, ctx.model_path, ctx.meta, settings)
        else:
            fmt = variant.split("-", 1)[1]
            engine = TritonEngine(name, ctx.model_path, ctx.meta,
                                  variant_settings(settings, variant, {**(triton_sets or {}), "triton_inputs": fmt}),
                                  workdir / variant)
        engines[variant] = engine
        engine.load(ctx.split)
        engine.warmup()
    return engines


class EngineSet:
    """The variants' engines, built on first use. sequential: one engine on the device at a time (the one in use;
    the others are closed), so no variant runs beside another's idle engine and its memory."""

    def __init__(self, variants: list[str], name: str, ctx: runner.RunContext, settings: Settings,
                 workdir: Path, sequential: bool, triton_sets: dict[str, Any]) -> None:
        self.name, self.ctx, self.settings, self.workdir, self.sequential = name, ctx, settings, workdir, sequential
        self.triton_sets = triton_sets
        self.engines: dict[str, Engine] = {}
        self.open: set[str] = set()
        if not sequential:
            self.engines = build_engines(variants, name, ctx, settings, workdir, triton_sets)
            self.open = set(variants)

    def get(self, variant: str) -> Engine:
        if variant not in self.open:
            for other in sorted(self.open):
                self.engines[other].close()
            self.open.clear()
            self.engines[variant] = build_engines([variant], self.name, self.ctx, self.settings,
                                                  self.workdir, self.triton_sets)[variant]
            self.open.add(variant)
        return self.engines[variant]

    def close(self) -> None:
        for variant in sorted(self.open):
            self.engines[variant].close()
        self.open.clear()


def schedule(variants: list[str], tests: list[tuple[str, str, float]], repeats: int,
             sequential: bool) -> list[tuple[int, tuple[str, str, float], str]]:
    """(repeat, test, variant) in run order. Interleaved: variants alternate within each test, the first one
    rotating per repeat (slow drifts in load hit all alike). Sequential: every run of one variant, then the next
    (one engine load per variant)."""
    if sequential:
        return [(r, t, v) for v in variants for r in range(repeats) for t in tests]
    return [(r, t, v) for r in range(repeats) for t in tests for v in rotated(variants, r)]


def diagnostics_line(result: dict[str, Any]) -> str:
    """Where one run's time went, in a few words: the SUT's batch phases (harness/batch_stamps.py), the
    interpreter's pauses (interpreter.QuietInterpreter.summary) and the host's CPU steal (harness/host_stats.py)."""
    phases = result.get("sut_batch_phases") or {}
    p = result.get("interpreter_pauses") or {}
    host = result.get("host_cpu") or {}
    return (f"SUT batches p99: dispatch {phases.get('dispatch_p99_ms', 0):.1f}, engine "
            f"{phases.get('engine_p99_ms', 0):.1f} ms; longest completion gap "
            f"{phases.get('longest_completion_gap_ms', 0):.1f} ms; "
            f"gc {p.get('gc0_collections', 0)}/{p.get('gc1_collections', 0)}/{p.get('gc2_collections', 0)} "
            f"max {p.get('gc_max_ms', 0):.1f} ms, stalls {p.get('stalls', 0)} max {p.get('stall_max_ms', 0):.1f} ms"
            + f"; host steal {100 * host.get('steal_share', 0.0):.1f}%, "
            f"preempted {host.get('involuntary_switches', 0):.0f}x")


def one_test(ctx: runner.RunContext, engine: Engine, scenario: str, settings: Settings, duration: float,
             qps: float, out: Path) -> dict[str, Any]:
    overrides = Overrides(min_duration_s=duration, min_query_count=1,
                          server_target_qps=qps if scenario == "Server" else None,
                          offline_expected_qps=qps if scenario == "Offline" else None)
    run_ctx = dataclasses.replace(ctx, overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    m = runner.run_loadgen(run_ctx, engine, scenario, "PerformanceOnly", settings, out)
    result = {"samples_per_second": m["samples_per_second"], "pairs_per_second": m["pairs_per_second"],
              "latency_p99_ms": m.get("latency_p99_ms"), "result_valid": m.get("result_valid"),
              "wall_seconds": m["wall_seconds"], "loadavg_1min_after": os.getloadavg()[0], "log_dir": str(out),
              "sut_batch_phases": m.get("sut_batch_phases"), "interpreter_pauses": m.get("interpreter_pauses"),
              "host_cpu": m.get("host_cpu")}
    if isinstance(engine, TritonEngine) and engine.trace_dir is not None:
        result["trace"] = summarize_trace(engine.trace_dir, began, time.perf_counter())
        print(f"{scenario} request phases through Triton (triton_server/trace.py):\n{format_summary(result['trace'])}")
    return result


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Medians per scenario and variant, with ratios to in-process (throughput; p99 for Server)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario, by_variant in runs.items():
        base = by_variant.get("in-process", [])
        out[scenario] = {}
        for variant, results in by_variant.items():
            sps = [r["samples_per_second"] for r in results]
            p99 = [r["latency_p99_ms"] for r in results if r["latency_p99_ms"] is not None]
            row: dict[str, Any] = {"samples_per_second": statistics.median(sps), "all_samples_per_second": sps,
                                   "pairs_per_second": statistics.median(r["pairs_per_second"] for r in results),
                                   "latency_p99_ms": statistics.median(p99) if p99 else None, "all_p99_ms": p99,
                                   "valid": [r["result_valid"] for r in results]}
            if base:
                row["throughput_ratio"] = row["samples_per_second"] / statistics.median(
                    b["samples_per_second"] for b in base)
                row["throughput_ratio_paired"] = statistics.median(
                    r["samples_per_second"] / b["samples_per_second"] for r, b in zip(results, base))
                base_p99 = [b["latency_p99_ms"] for b in base if b["latency_p99_ms"] is not None]
                if p99 and base_p99:
                    row["p99_ratio"] = row["latency_p99_ms"] / statistics.median(base_p99)
                    row["p99_ratio_paired"] = statistics.median(
                        r["latency_p99_ms"] / b["latency_p99_ms"] for r, b in zip(results, base)
                        if r["latency_p99_ms"] and b["latency_p99_ms"])
            out[scenario][variant] = row
    return out


def parse_targets(text: str | None) -> list[float]:
    """'350000,420000' -> [350000.0, 420000.0]; None or '' -> []."""
    return [float(t) for t in (text or "").split(",") if t.strip()]


def test_plan(scenarios: list[str], offline_qps: float, server_targets: list[float]) -> list[tuple[str, str, float]]:
    """(label, scenario, target samples/s) of each test in a repeat: Offline once, Server once per target
    (labelled 'Server <target>' when there are several)."""
    plan = []
    for scenario in scenarios:
        if scenario == "Offline":
            plan.append(("Offline", "Offline", offline_qps))
            continue
        for target in server_targets:
            label = "Server" if len(server_targets) == 1 else f"Server {target:.0f}"
            plan.append((label, "Server", target))
    return plan


def server_capacity(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """Per variant: the highest Server target whose runs were all VALID (MLPerf's Server result is the highest
    target that holds the latency bound), and its ratio to in-process's."""
    best: dict[str, float | None] = {}
    for label, by_variant in runs.items():
        if not label.startswith("Server"):
            continue
        for variant, results in by_variant.items():
            best.setdefault(variant, None)
            if results and all(r["result_valid"] for r in results):
                target = float(results[0]["target_qps"])
                best[variant] = max(best[variant] or 0.0, target)
    base = best.get("in-process")
    return {variant: {"highest_valid_target_qps": value,
                      "ratio": (value / base) if value is not None and base else None}
            for variant, value in best.items()}


def print_capacity(capacity: dict[str, dict[str, Any]]) -> None:
    if not capacity:
        return
    print(f"\n{'Server capacity':<24}{'highest VALID target':>22}{'x in-process':>14}")
    for variant, row in capacity.items():
        value = row["highest_valid_target_qps"]
        ratio = f"{row['ratio']:>14.3f}" if row["ratio"] is not None else f"{'-':>14}"
        shown = f"{value:>22,.0f}" if value is not None else f"{'none VALID':>22}"
        print(f"{'  ' + variant:<24}{shown}{ratio}")


def _ratio(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:>9.3f}" if key in row else f"{'-':>9}"


def print_table(summary: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Medians; x = ratio to in-process (of the medians, and the median of the per-repeat ratios)."""
    print(f"\n{'scenario':<15}{'variant':<15}{'samples/s':>11}{'pairs/s':>11}{'p99 ms':>10}{'x thru':>9}"
          f"{'x thru/r':>9}{'x p99':>9}{'x p99/r':>9}  valid")
    for scenario, rows in summary.items():
        for variant, row in rows.items():
            p99 = f"{row['latency_p99_ms']:>10.1f}" if row["latency_p99_ms"] is not None else f"{'-':>10}"
            print(f"{scenario:<15}{variant:<15}{row['samples_per_second']:>11,.1f}{row['pairs_per_second']:>11,.0f}"
                  f"{p99}{_ratio(row, 'throughput_ratio')}{_ratio(row, 'throughput_ratio_paired')}"
                  f"{_ratio(row, 'p99_ratio')}{_ratio(row, 'p99_ratio_paired')}  {row['valid']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset-dir", type=Path, default=None)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--pairs", type=int, default=200_000, help="test pairs of the fixture dataset")
    p.add_argument("--engine", default="reference", help="reference or cpu (cuda on a GPU machine)")
    p.add_argument("--variants", default="in-process,triton-ranges,triton-rows")
    p.add_argument("--scenarios", default="Offline,Server")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--offline-duration", type=float, default=20.0, help="LoadGen min_duration, seconds")
    p.add_argument("--server-duration", type=float, default=30.0)
    p.add_argument("--server-qps", default=None,
                   help="Server target samples/s, or a comma list (a sweep: each variant at each target, and the "
                        "highest VALID target per variant); default: --server-load x measured samples/s")
    p.add_argument("--offline-qps", type=float, default=None,
                   help="Offline expected samples/s (LoadGen sizes the query from it); default: the system "
                        "config's offline_expected_qps, else the probe")
    p.add_argument("--server-load", type=float, default=0.4,
                   help="Server target as a fraction of the probed throughput (headroom for noisy neighbours)")
    p.add_argument("--sequential", action="store_true",
                   help="one engine on the device at a time: all runs of a variant, then the next (default: all "
                        "engines loaded, variants alternating within each test)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an engine/harness setting for every variant (value parsed as JSON if it can be), "
                        "e.g. --set device=cpu --set batch_size=8192")
    p.add_argument("--triton-set", action="append", default=[], metavar="KEY=VALUE",
                   help="like --set, for the Triton variants only (client and server), e.g. "
                        "--triton-set inflight_batches=4 --triton-set triton_model_inflight=3")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    scenarios = configs.parse_choices(args.scenarios, ("Offline", "Server"), "scenario")
    if unknown := set(variants) - set(VARIANTS):
        p.error(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")

    data, model, what = pick_inputs(args, "triton", 1024)
    work = scratch_path() / "bench" / "triton_logs" / time.strftime("%Y%m%d-%H%M%S")
    ctx = make_context(data, model, work / "logs")
    settings = {s: configs.resolve(s, "default", args.engine, ctx.system, None,
                                   configs.parse_overrides(args.set)).settings for s in scenarios}
    triton_by_scenario = {s: {**triton_config(s, args.engine, ctx.system, settings[s]),
                              **configs.parse_overrides(args.triton_set)} for s in scenarios}
    mean_pairs = float(ctx.offsets[-1]) / (len(ctx.offsets) - 1)
    build_settings = settings[scenarios[0]]
    triton_sets = triton_by_scenario[scenarios[0]]
    loaded = EngineSet(variants, args.engine, ctx, build_settings, work / "servers", args.sequential, triton_sets)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    server_targets: list[float] = []
    try:
        probe = loaded.get(variants[0] if args.sequential else ("in-process" if "in-process" in variants
                                                                 else variants[0]))
        rate = engine_rate(probe, min(len(ctx.split), 65536), mean_pairs)
        server_targets = parse_targets(args.server_qps) or [args.server_load * rate]
        offline_qps = args.offline_qps or (settings["Offline"].offline_expected_qps if "Offline" in settings
                                           else rate)
        tests = test_plan(scenarios, offline_qps, server_targets)
        runs = {label: {v: [] for v in variants} for label, _, _ in tests}
        print(f"engine {args.engine}: ~{rate:.1f} samples/s in a direct probe; Server target(s) "
              f"{', '.join(f'{q:.1f}' for q in server_targets)} samples/s", flush=True)
        for repeat, (label, scenario, target), variant in schedule(variants, tests, args.repeats, args.sequential):
            duration = args.offline_duration if scenario == "Offline" else args.server_duration
            out = work / f"r{repeat}" / label.replace(" ", "_") / variant
            result = one_test(ctx, loaded.get(variant), scenario,
                              variant_settings(settings[scenario], variant, triton_by_scenario[scenario]),
                              duration, target, out)
            result["target_qps"] = target
            runs[label][variant].append(result)
            print(f"repeat {repeat} {label:<15}{variant:<15}{result['samples_per_second']:>11.1f} samples/s"
                  f"  p99 {result['latency_p99_ms'] or 0:>8.1f} ms  valid {result['result_valid']}"
                  f"  ({diagnostics_line(result)})", flush=True)
    finally:
        loaded.close()
    engines = loaded.engines
    capacity = server_capacity(runs) if len(server_targets) > 1 else {}
    summary = summarize(runs)
    print(f"\ndataset {data} ({what}), model {model}, engine {args.engine}, {len(ctx.split):,} pairs, "
          f"{mean_pairs:.0f} pairs/sample; repeats {args.repeats}; Server target(s) {server_targets} samples/s")
    print_table(summary)
    print_capacity(capacity)
    result = {"dataset_dir": str(data), "model_path": str(model), "inputs": what, "engine": args.engine,
              "machine": platform.processor() or platform.machine(), "cores_visible": os.cpu_count(),
              "loadavg_at_end": os.getloadavg(), "repeats": args.repeats, "pairs_per_sample": mean_pairs,
              "offline_duration_s": args.offline_duration, "server_duration_s": args.server_duration,
              "server_target_qps": server_targets, "server_capacity": capacity, "probe_samples_per_second": rate,
              "settings": {s: value.as_dict() for s, value in settings.items()},
              "triton_sets": triton_by_scenario,
              "engines": {v: e.describe() for v, e in engines.items()}, "runs": runs, "summary": summary,
              "logs": str(work)}
    out_path = args.out or scratch_path() / "bench" / "bench_triton_server.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
