#!/usr/bin/env python3
"""The harness's own ceiling: LoadGen Offline and Server driven through the real SUT with an instant engine.

The engine returns a prediction buffer of the right size without computing anything, so samples/s here is what
LoadGen + the SUT (issue, batching, completion) can sustain on this CPU, per sample queue ("native": LoadGen's C
API and the C queue; "python": LoadGen's Python bindings), measured in the same run. Samples follow MLPerf's
aggregation trace over the full 89,137,319-pair test set (330,067 users, mean 270 pairs).

    python3 benchmarks/bench_harness.py [--duration 10] [--bridges native,python] [--out DIR]
Prints a table and writes bench_harness.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from concurrent.futures import Future
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import mlperf_loadgen as lg  # noqa: E402
import numpy as np  # noqa: E402

from dlrm_bench.criteo.dataset import Split  # noqa: E402
from dlrm_bench.criteo.partition import aggregation_sizes, load_quantiles, partition_offsets  # noqa: E402
from dlrm_bench.criteo.schema import CRITEO_TB_TEST_PAIRS  # noqa: E402
from dlrm_bench.engines.base import Engine  # noqa: E402
from dlrm_bench.harness.loadgen_settings import log_settings  # noqa: E402
from dlrm_bench.loadgen_logs import loadgen_metrics, read_detail_log  # noqa: E402
from dlrm_bench.harness.qsl import SampleLibrary  # noqa: E402
from dlrm_bench.harness.sut import make_sut  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402


class InstantEngine(Engine):
    """Returns 0.5 for every pair at once: the harness's cost alone."""

    name = "instant"

    @property
    def device(self) -> str:
        return "none"

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return np.full(len(numeric), 0.5, dtype=np.float32)

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        future: Future[np.ndarray] = Future()
        future.set_result(np.full(int((ends - starts).sum()), 0.5, dtype=np.float32))
        return future


def empty_split() -> Split:
    """The instant engine reads no inputs; the QSL only madvises memory maps (none here)."""
    return Split(Path("."), np.zeros(1, np.float32), np.zeros((1, 13), np.float32), np.zeros((1, 26), np.int32))


def test_settings(scenario: str, qps: float, duration_s: float) -> lg.TestSettings:
    ts = lg.TestSettings()
    ts.scenario = lg.TestScenario.Offline if scenario == "Offline" else lg.TestScenario.Server
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(duration_s * 1000)
    ts.min_query_count = 1
    if scenario == "Offline":
        ts.offline_expected_qps = qps
    else:
        ts.server_target_qps = qps
        ts.server_target_latency_ns = 30_000_000
        ts.server_target_latency_percentile = 0.99
    return ts


def run_one(offsets: np.ndarray, scenario: str, bridge: str, qps: float, duration_s: float,
            settings: Settings) -> dict:
    engine = InstantEngine()
    with tempfile.TemporaryDirectory() as out:
        with SampleLibrary(empty_split(), offsets, 204800) as qsl, \
                make_sut(scenario, engine, qsl, replace(settings, loadgen_bridge=bridge)) as sut:
            t0 = time.perf_counter()
            lg.StartTestWithLogSettings(sut.handle, qsl.handle, test_settings(scenario, qps, duration_s),
                                        log_settings(Path(out)), "")
            wall = time.perf_counter() - t0
            kind = sut.queue.kind
        metrics = loadgen_metrics(read_detail_log(Path(out) / "mlperf_log_detail.txt"), scenario)
    return {"scenario": scenario, "bridge": kind, "target_qps": qps, "wall_s": wall,
            "samples_per_second": metrics["samples_per_second"], "p99_ms": metrics.get("latency_p99_ms"),
            "min_latency_ms": metrics.get("latency_min_ms"),  # Offline: LoadGen's one issue to the first result
            "valid": metrics.get("result_valid")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="LoadGen min_duration per run, seconds")
    ap.add_argument("--bridges", default="native,python")
    ap.add_argument("--offline-qps", type=float, default=2_000_000)
    ap.add_argument("--server-qps", default="200000,500000", help="Server target QPS values to try (empty: none)")
    ap.add_argument("--batch-size", type=int, default=262144)
    ap.add_argument("--complete-threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    args = ap.parse_args()

    offsets = partition_offsets(aggregation_sizes(CRITEO_TB_TEST_PAIRS, load_quantiles()))
    settings = Settings(batch_size=args.batch_size, complete_threads=args.complete_threads, inflight_batches=4,
                        server_max_wait_ms=1.0)
    rows = []
    for bridge in args.bridges.split(","):
        rows.append(run_one(offsets, "Offline", bridge, args.offline_qps, args.duration, settings))
        print(json.dumps(rows[-1]), flush=True)
        for qps in (float(q) for q in args.server_qps.split(",") if q):
            rows.append(run_one(offsets, "Server", bridge, qps, args.duration, settings))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'scenario':9} {'bridge':7} {'target':>10} {'samples/s':>12} {'p99 ms':>8} {'min ms':>8} valid")
    for r in rows:
        p99, first = (f"{r[k]:.2f}" if r[k] is not None else "-" for k in ("p99_ms", "min_latency_ms"))
        print(f"{r['scenario']:9} {r['bridge']:7} {r['target_qps']:>10.0f} {r['samples_per_second'] or 0:>12,.0f} "
              f"{p99:>8} {first:>8} {r['valid']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_harness.json").write_text(json.dumps({"runs": rows}, indent=2))
    print(f"wrote {args.out / 'bench_harness.json'}")
    return 0


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
