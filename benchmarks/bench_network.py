"""The network SUT against in-process on one host: Offline throughput and Server p99, and the QDL's CPU per query.

One local `dlrm-bench serve` node (the same served model: `serve.node_spec`, a tritonserver on loopback) per
network variant, driven through LoadGen's QDL exactly as `dlrm-bench run --sut network` drives remote nodes:
`in-process` (the batching SUT, the engine in this process), `network` (every request carries the QSL's rows:
MLPerf's Network division) and `network-ranges` (row ranges of the node's own test split: open division).
Variants run one after another (one engine on the device at a time), each for `--repeats` Offline and Server
tests; the table gives medians and the ratio to in-process. Server runs every variant at the same target(s).

The QDL's cost: this process's CPU time (getrusage: LoadGen, the QDL and the gRPC client; tritonserver is a child
and not counted) divided by the queries of the Server runs, and by the requests of the Offline runs.

    .venv/bin/python benchmarks/bench_network.py --engine cpu                       # here (CPU)
    .venv/bin/python benchmarks/bench_network.py --engine cuda --dataset-dir D --model M --server-qps 2000,8000

Writes build/bench/bench_network.json (or --out); LoadGen logs under build/bench/network_logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.conftest (fixture dataset writer)
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_inputs import pick_inputs, write_report  # noqa: E402
from bench_triton_server import make_context, one_test, parse_targets, print_table, summarize  # noqa: E402
from dlrm_bench import configs  # noqa: E402
from dlrm_bench.engines import create_engine  # noqa: E402
from dlrm_bench.engines.base import Engine  # noqa: E402
from dlrm_bench.harness import runner  # noqa: E402
from dlrm_bench.paths import scratch_path  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402
from dlrm_bench.triton_server.client import start_server  # noqa: E402
from dlrm_bench.triton_server.cluster import NetworkEngine  # noqa: E402
from dlrm_bench.triton_server.serve import node_spec  # noqa: E402
from dlrm_bench.triton_server.server import ServerOptions, TritonServer  # noqa: E402

VARIANTS = {"in-process": "local", "network": "network", "network-ranges": "network_ranges"}
# Offline's expected QPS over the probed rate: LoadGen sizes the one query for that rate, and a query that a faster
# engine finishes before min_duration is INVALID
OFFLINE_HEADROOM = 1.5


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Variant:
    """One variant's engine (and, for the network ones, the local node it talks to), closed together."""

    def __init__(self, name: str, engine_name: str, ctx: runner.RunContext, settings: Settings,
                 node_settings: Settings, work: Path) -> None:
        self.name, self.server = name, None
        if name == "in-process":
            self.engine: Engine = create_engine(engine_name, ctx.model_path, ctx.meta, settings)
        else:
            fmt = "ranges" if name == "network-ranges" else "rows"
            node = node_settings.with_values({"triton_inputs": fmt}, "bench")
            spec = node_spec(engine_name, ctx.model_path, ctx.meta, node, work / name, f"bench-{fmt}")
            self.server = start_server(spec, work / name, ServerOptions(startup_timeout_s=1800))
            self.engine = NetworkEngine([self.server.grpc_url], VARIANTS[name], ctx.meta, ctx.model_path, settings)
        try:
            self.engine.load(ctx.split)
            self.engine.warmup()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.engine.close()
        if isinstance(self.server, TritonServer):
            self.server.stop()


def probe_rate(engine: Engine, ctx: runner.RunContext, seconds: float = 2.0) -> float:
    """samples/s of `engine` on whole samples sent all at once (sizes the Offline query)."""
    starts, ends = ctx.offsets[:-1], ctx.offsets[1:]
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        n = min(len(starts), 4096)
        engine.predict_ranges_async(starts[:n], ends[:n]).result()
        done += n
    return done / (time.perf_counter() - began)


def measured_test(ctx: runner.RunContext, variant: Variant, scenario: str, settings: Settings, duration: float,
                  qps: float, out: Path) -> dict[str, Any]:
    """one_test plus this process's CPU time per sample and per request (network: gRPC requests; in-process:
    engine batches)."""
    before, nodes_before = cpu_seconds(), variant.engine.describe().get("nodes")
    result = one_test(ctx, variant.engine, scenario, settings, duration, qps, out)
    cpu = cpu_seconds() - before
    stamps = np.load(out / "sut_batches.npy")
    samples = int(stamps[:, 4].sum())
    requests = len(stamps)
    if nodes_before is not None:
        requests = sum(n["requests"] for n in variant.engine.describe()["nodes"]) - \
            sum(n["requests"] for n in nodes_before)
    result.update({"target_qps": qps, "process_cpu_s": cpu, "samples": samples, "requests": requests,
                   "cpu_us_per_sample": 1e6 * cpu / max(samples, 1),
                   "cpu_us_per_request": 1e6 * cpu / max(requests, 1)})
    return result


def marginal_cost(results: list[dict[str, Any]]) -> float | None:
    """CPU microseconds per added request: the least-squares slope of CPU seconds over requests, across runs at
    two or more different targets (None otherwise)."""
    if len({r["target_qps"] for r in results}) < 2:
        return None
    slope = np.polyfit([r["requests"] for r in results], [r["process_cpu_s"] for r in results], 1)[0]
    return float(1e6 * slope)


def run_variant(name: str, ctx: runner.RunContext, args: argparse.Namespace, settings: dict[str, Settings],
                node_settings: Settings, tests: list[tuple[str, float | None, float]], work: Path,
                runs: dict[str, dict[str, list[dict[str, Any]]]], facts: dict[str, Any]) -> None:
    """Build variant `name`, run `tests` ((scenario, target or None: OFFLINE_HEADROOM x its probed rate,
    duration)) --repeats times, close it."""
    variant = Variant(name, args.engine, ctx, settings["Offline"], node_settings, work / "nodes")
    try:
        rate = facts["rates"].setdefault(name, probe_rate(variant.engine, ctx))
        facts["engines"][name] = variant.engine.describe()
        sut = "local" if name == "in-process" else VARIANTS[name]
        for repeat in range(args.repeats):
            for scenario, target, duration in tests:
                qps = target or rate * OFFLINE_HEADROOM
                out = work / f"r{repeat}" / f"{scenario}_{qps:.0f}" / name
                run_settings = settings[scenario].with_values({"sut": sut}, "bench")
                result = measured_test(ctx, variant, scenario, run_settings, duration, qps, out)
                runs[scenario].setdefault(name, []).append(result)
                print(f"{name:<15} {scenario:<8} {result['samples_per_second']:>11,.1f} samples/s  p99 "
                      f"{result['latency_p99_ms'] or 0:>8.2f} ms  valid {result['result_valid']}  CPU "
                      f"{result['cpu_us_per_sample']:,.0f} us/sample, {result['cpu_us_per_request']:,.0f} "
                      f"us/request", flush=True)
    finally:
        variant.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset-dir", type=Path, default=None)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--pairs", type=int, default=200_000, help="test pairs of the fixture dataset")
    p.add_argument("--engine", default="cpu", help="reference, cpu or cuda")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--offline-duration", type=float, default=10.0, help="LoadGen min_duration, seconds")
    p.add_argument("--server-duration", type=float, default=15.0)
    p.add_argument("--server-qps", default=None, help="Server target(s), comma-separated samples/s (default: "
                                                       "--server-load x the slowest variant's Offline median)")
    p.add_argument("--server-load", type=float, default=0.3)
    p.add_argument("--node-scenario", default="Server", help="whose triton config the node serves (as serve)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := set(names) - set(VARIANTS):
        p.error(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")

    data, model, what = pick_inputs(args, "network", 1024)
    work = scratch_path() / "bench" / "network_logs" / time.strftime("%Y%m%d-%H%M%S")
    ctx = make_context(data, model, work / "logs")
    settings = {s: configs.resolve(s, "default", args.engine, ctx.system).settings for s in ("Offline", "Server")}
    node_settings = configs.resolve(args.node_scenario, "triton", args.engine, ctx.system).settings
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {"Offline": {}, "Server": {}}
    facts: dict[str, Any] = {"rates": {}, "engines": {}}
    offline = [("Offline", None, args.offline_duration)]
    targets = parse_targets(args.server_qps)
    for name in names:  # given targets: one pass; else Offline first, the shared Server target from its medians
        server = [("Server", q, args.server_duration) for q in targets]
        run_variant(name, ctx, args, settings, node_settings, offline + server, work, runs, facts)
    if not targets:
        targets = [args.server_load * min(statistics.median(r["samples_per_second"] for r in results)
                                          for results in runs["Offline"].values())]
        for name in names:
            run_variant(name, ctx, args, settings, node_settings, [("Server", targets[0], args.server_duration)],
                        work, runs, facts)
    summary = summarize(runs)
    for scenario, by_name in runs.items():
        for name, results in by_name.items():
            for key in ("cpu_us_per_sample", "cpu_us_per_request"):
                summary[scenario][name][key] = statistics.median(r[key] for r in results)
            summary[scenario][name]["marginal_cpu_us_per_request"] = marginal_cost(results)
    print(f"\ndataset {data} ({what}), engine {args.engine}; Server target(s) {targets} samples/s; "
          f"CPU: {cpu_model()}, {os.cpu_count()} visible")
    print_table(summary)
    print("\nthis process's CPU time (LoadGen + SUT or QDL + gRPC client; the node not counted), medians; marginal: "
          "the slope over runs at different Server targets (the fixed cost of threads that wait removed):")
    for scenario, rows in summary.items():
        for name, row in rows.items():
            marginal = row["marginal_cpu_us_per_request"]
            print(f"  {scenario:<8}{name:<16}{row['cpu_us_per_sample']:>9,.0f} us/sample"
                  f"{row['cpu_us_per_request']:>11,.0f} us/request" +
                  (f"{marginal:>11,.0f} us/request marginal" if marginal is not None else ""))
    report = {"dataset_dir": str(data), "model_path": str(model), "inputs": what, "engine": args.engine,
              "cpu_model": cpu_model(), "cores_visible": os.cpu_count(), "machine": platform.machine(),
              "repeats": args.repeats, "server_target_qps": targets, "probe_samples_per_second": facts["rates"],
              "settings": {s: v.as_dict() for s, v in settings.items()}, "node_settings": node_settings.as_dict(),
              "engines": facts["engines"], "runs": runs, "summary": summary, "logs": str(work)}
    out = args.out or scratch_path() / "bench" / "bench_network.json"
    print(f"\nwrote {write_report(out.parent, out.name, json.loads(json.dumps(report, default=str)))}")
    return 0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
