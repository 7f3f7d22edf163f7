#!/usr/bin/env python3
"""Server under host stalls, modelled: the real LoadGen and the real SUT drive a model of one GPU.

The question it answers: which Server settings keep p99 under the bound when the host stalls (the "slow
stretches" and "holes" of docs/architecture.md), at a target close to the GPU's capacity. A GPU run costs minutes
per setting and per host; the harness's batching, queueing and completion are the same code with any engine, so
here they run against `ModelledGpu`:
- a batch occupies the GPU for fixed + padded_pairs / rate seconds, one batch at a time, where padded_pairs is the
  CUDA-graph bucket that holds it and (fixed, rate) are fitted to measured Offline throughputs at two batch sizes
  (--offline-points; the default: an H100 at 1,048,576 and 524,288 pairs, docs/architecture.md);
- each dispatch costs the host --dispatch-ms (measured median with CUDA graphs: 0.44-0.48 ms);
- a stall profile slows the host calls (dispatches and the hand-back of results) inside its windows, a 30 ms
  window every ~1.75 s in which each call takes 10 ms more ("slow"), 8 times as long ("slow8x") or waits for the
  window's end ("steal"); or a 500 ms freeze every ~20 s ("hole"); or "none". LoadGen's own issuing is not slowed.

To fit a 2-core machine, rates are scaled by --scale: the target QPS, the GPU's pair rate and the settings' batch
sizes (batch_size, gpu_batch_size, server_backlog_batch_size) are multiplied by it, while samples keep their real
sizes (MLPerf's aggregation trace) and every time (fill time of a batch, its GPU time, stalls, latencies) stays
as at full scale. The numbers are a model's: they rank settings, they are not results.

    python3 benchmarks/bench_server_model.py [--qps 745000] [--duration 60] [--repeats 3] [--stalls none,slow,...]
        [--compare KEY=VALUE[,KEY=VALUE...]] ... [--scale 0.125] [--out DIR]

The baseline is the shipped H100x1 Server config (configs/dlrm); each --compare is that config with the given
settings (batch sizes at full scale). Runs are interleaved (per repeat: every stall profile, every variant).
Prints one line per run and a table of medians, and writes bench_server_model.json.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlperf_loadgen as lg  # noqa: E402
import numpy as np  # noqa: E402

from bench_harness import empty_split  # noqa: E402
from bench_inputs import run_main, write_report  # noqa: E402
from dlrm_bench import configs  # noqa: E402
from dlrm_bench.criteo.partition import aggregation_sizes, load_quantiles, partition_offsets  # noqa: E402
from dlrm_bench.criteo.schema import CRITEO_TB_TEST_PAIRS  # noqa: E402
from dlrm_bench.engines.base import Engine  # noqa: E402
from dlrm_bench.engines.cuda.engine import graph_bucket_sizes  # noqa: E402
from dlrm_bench.errors import UserError  # noqa: E402
from dlrm_bench.harness.loadgen_settings import Overrides, build_test_settings, log_settings  # noqa: E402
from dlrm_bench.harness.qsl import SampleLibrary  # noqa: E402
from dlrm_bench.harness.sut import make_sut  # noqa: E402
from dlrm_bench.loadgen_logs import loadgen_metrics, read_detail_log  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402
from dlrm_bench.system import SystemInfo  # noqa: E402

H100_OFFLINE_POINTS = "1048576:759271,524288:747346"
"""Offline samples/s of one H100 at two batch sizes (pairs), measured in one run (docs/architecture.md)."""
BATCH_SETTINGS = ("batch_size", "gpu_batch_size", "server_backlog_batch_size")
"""Settings counted in pairs: multiplied by --scale."""
H100 = SystemInfo(cpu_model="modelled host", cpu_cores=16, gpu_names=("NVIDIA H100 80GB HBM3",))


@dataclass(frozen=True)
class BatchTime:
    """GPU seconds of a batch of p pairs: fixed_s + p / pairs_per_s."""

    fixed_s: float
    pairs_per_s: float

    def __call__(self, pairs: int) -> float:
        return self.fixed_s + pairs / self.pairs_per_s


def fit_batch_time(points: list[tuple[int, float]], pairs_per_sample: float) -> BatchTime:
    """(batch pairs, Offline samples/s) at two batch sizes -> the line through their per-batch times."""
    (b1, s1), (b2, s2) = sorted(points)
    if b1 == b2:
        raise UserError(f"--offline-points: need two different batch sizes, got {points}")
    t1, t2 = b1 / (s1 * pairs_per_sample), b2 / (s2 * pairs_per_sample)
    slope = (t2 - t1) / (b2 - b1)
    fixed = t1 - slope * b1
    if slope <= 0 or fixed < 0:
        raise UserError(f"--offline-points {points}: larger batches must take longer, and no batch less than "
                        f"nothing (fitted {fixed * 1e3:.3f} ms + pairs / {1 / slope if slope > 0 else 0:,.0f} per s)")
    return BatchTime(fixed, 1.0 / slope)


@dataclass(frozen=True)
class StallProfile:
    """Host stalls: a window of window_s about every period_s (start jittered by +-25%); a host call inside one
    takes call_s more, or call_factor times as long, or (neither given) waits for the window's end."""

    name: str
    period_s: float = 0.0
    window_s: float = 0.0
    call_s: float | None = None
    call_factor: float | None = None

    def windows(self, horizon_s: float, seed: int) -> list[tuple[float, float]]:
        """[(start, end)] relative to the run's start, up to horizon_s."""
        if self.period_s <= 0:
            return []
        rng = random.Random(seed)
        out, t = [], 0.0
        while t < horizon_s:
            t += self.period_s * rng.uniform(0.75, 1.25)
            out.append((t, t + self.window_s))
        return out


STALLS = {
    "none": StallProfile("none"),
    "slow": StallProfile("slow", period_s=1.75, window_s=0.030, call_s=0.010),
    "slow8x": StallProfile("slow8x", period_s=1.75, window_s=0.030, call_factor=8.0),
    "steal": StallProfile("steal", period_s=1.75, window_s=0.030),
    "hole": StallProfile("hole", period_s=20.0, window_s=0.500),
}
"""slow: dispatches of 5-15 ms instead of 0.5 in 20-40 ms stretches every 1.5-2 s; slow8x: the same stretches on a
host whose vCPUs ran ~8x slower; steal: hypervisor steal filling the stretch; hole: a 0.5 s hole
(docs/architecture.md, "Server's slow stretches")."""


class HostStalls:
    """When host calls are slowed: the windows of a StallProfile from a start time (perf_counter)."""

    def __init__(self, profile: StallProfile, start: float, horizon_s: float, seed: int) -> None:
        self.profile = profile
        self.start = start
        self.windows = profile.windows(horizon_s, seed)
        self.starts = [w[0] for w in self.windows]

    def delay(self, now: float, host_s: float) -> float:
        """Extra seconds a host call that begins at `now` and normally takes host_s takes."""
        i = bisect.bisect_right(self.starts, now - self.start) - 1
        if i < 0:
            return 0.0
        begin, end = self.windows[i]
        if now - self.start >= end:
            return 0.0
        if self.profile.call_s is not None:
            return self.profile.call_s
        if self.profile.call_factor is not None:
            return host_s * (self.profile.call_factor - 1.0)
        return self.start + end - now


class ModelledGpu(Engine):
    """One GPU as a queue: a batch occupies it for batch_time(its graph bucket) after its dispatch (dispatch_s of
    host time, plus the stalls); its predictions (0.5 each) are handed back when it ends, plus the stalls of a
    host call as long as a dispatch."""

    name = "modelled-gpu"
    pads_batches = True

    def __init__(self, batch_time: BatchTime, buckets: list[int], dispatch_s: float, stalls: HostStalls) -> None:
        super().__init__()
        self.batch_time = batch_time
        self.buckets = buckets
        self.dispatch_s = dispatch_s
        self.stalls = stalls
        self.gpu_free = 0.0
        self.computed_pairs = 0
        self.real_pairs = 0
        self._due: list[tuple[float, int, Future, int]] = []
        self._count = 0
        self._cv = threading.Condition()
        self._closed = False
        self._timer = threading.Thread(target=self._hand_back, name="modelled-gpu", daemon=True)
        self._timer.start()

    @property
    def device(self) -> str:
        return "modelled GPU"

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return np.full(len(numeric), 0.5, dtype=np.float32)

    def padded(self, pairs: int) -> int:
        """Pairs computed for a batch of `pairs`: its pieces of at most the largest bucket, each padded up to the
        smallest bucket that holds it."""
        top = self.buckets[-1]
        full, rest = divmod(pairs, top)
        return full * top + (self.buckets[bisect.bisect_left(self.buckets, rest)] if rest else 0)

    def predict_ranges_async(self, starts: np.ndarray, ends: np.ndarray) -> "Future[np.ndarray]":
        pairs = int((np.asarray(ends) - np.asarray(starts)).sum())
        time.sleep(self.dispatch_s + self.stalls.delay(time.perf_counter(), self.dispatch_s))
        computed = self.padded(pairs)
        future: Future[np.ndarray] = Future()
        with self._cv:
            self.gpu_free = max(time.perf_counter(), self.gpu_free) + self.batch_time(computed)
            due = self.gpu_free + self.stalls.delay(self.gpu_free, self.dispatch_s)
            self.computed_pairs += computed
            self.real_pairs += pairs
            self._count += 1
            heapq.heappush(self._due, (due, self._count, future, pairs))
            self._cv.notify()
        return future

    def _hand_back(self) -> None:
        with self._cv:
            while not self._closed:
                if not self._due:
                    self._cv.wait()
                    continue
                wait = self._due[0][0] - time.perf_counter()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                _, _, future, pairs = heapq.heappop(self._due)
                self._cv.release()  # the future's callbacks (the SUT's completion) run without the lock
                try:
                    future.set_result(np.full(pairs, 0.5, dtype=np.float32))
                finally:
                    self._cv.acquire()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._timer.join()


def scaled(settings: Settings, scale: float) -> Settings:
    """The batch-size settings times `scale`, rounded up to a 128-pair tile (0 stays 0)."""
    values = {k: -(-int(getattr(settings, k) * scale) // 128) * 128 for k in BATCH_SETTINGS}
    return settings.with_values(values, "--scale")


@dataclass(frozen=True)
class Model:
    """What every run shares."""

    offsets: np.ndarray
    batch_time: BatchTime
    dispatch_s: float
    scale: float
    qps: float
    duration_s: float


def run_one(model: Model, settings: Settings, stall: StallProfile, seed: int) -> dict:
    """One LoadGen Server run of `settings` (full-scale batch sizes) under `stall`; its metrics."""
    s = scaled(settings, model.scale)
    gpu_max = max(s.gpu_batch_size, s.batch_size)
    stalls = HostStalls(stall, time.perf_counter(), 3 * model.duration_s + 60, seed)
    engine = ModelledGpu(replace(model.batch_time, pairs_per_s=model.batch_time.pairs_per_s * model.scale),
                         graph_bucket_sizes(gpu_max, s.cuda_graph_buckets), model.dispatch_s, stalls)
    overrides = Overrides(min_duration_s=model.duration_s, min_query_count=1, server_target_qps=model.qps * model.scale)
    try:
        with tempfile.TemporaryDirectory() as out:
            with SampleLibrary(empty_split(), model.offsets, 204800) as qsl, make_sut("Server", engine, qsl, s) as sut:
                ts = build_test_settings("Server", "PerformanceOnly", s, qsl.total_samples, overrides)
                lg.StartTestWithLogSettings(sut.handle, qsl.handle, ts, log_settings(Path(out)), "")
                batches = sut.counters.batches
            metrics = loadgen_metrics(read_detail_log(Path(out) / "mlperf_log_detail.txt"), "Server")
    finally:
        engine.close()
    sps = metrics["samples_per_second"]
    return {"stall": stall.name, "samples_per_second_full_scale": sps / model.scale if sps else None,
            "p99_ms": metrics["latency_p99_ms"], "valid": metrics["result_valid"],
            "invalid_reason": metrics["invalid_reason"], "batches": batches,
            "mean_batch_pairs_full_scale": engine.real_pairs / max(1, batches) / model.scale,
            "padding_percent": 100.0 * (engine.computed_pairs - engine.real_pairs) / max(1, engine.computed_pairs)}


def summary(rows: list[dict], labels: list[str], stalls: list[str]) -> list[dict]:
    """Per (stall, variant): median p99 and samples/s, VALID count, median padding."""
    out = []
    for stall in stalls:
        for label in labels:
            runs = [r for r in rows if r["stall"] == stall and r["variant"] == label]
            p99 = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
            out.append({"stall": stall, "variant": label, "runs": len(runs),
                        "valid": sum(bool(r["valid"]) for r in runs),
                        "median_p99_ms": statistics.median(p99) if p99 else None,
                        "max_p99_ms": max(p99) if p99 else None,
                        "median_padding_percent": statistics.median(r["padding_percent"] for r in runs)})
    return out


def offline_points(text: str) -> list[tuple[int, float]]:
    try:
        points = [(int(b), float(s)) for b, s in (item.split(":") for item in text.split(",") if item)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PAIRS:SAMPLES_PER_S,PAIRS:SAMPLES_PER_S, got {text!r}") from None
    if len(points) != 2 or any(b <= 0 or s <= 0 for b, s in points):
        raise argparse.ArgumentTypeError(f"expected two positive PAIRS:SAMPLES_PER_S points, got {text!r}")
    return points


def stall_names(text: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in STALLS]
    if unknown or not names:
        named = ", ".join(unknown) if unknown else repr(text)
        raise argparse.ArgumentTypeError(f"unknown stall profile {named}: expected some of {', '.join(STALLS)}")
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qps", type=float, default=745_000, help="Server target, samples/s at full scale")
    ap.add_argument("--duration", type=float, default=60.0, help="LoadGen min_duration per run, seconds")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--stalls", type=stall_names, default="none,slow,slow8x,steal",
                    help=f"of {', '.join(STALLS)}")
    ap.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE...]",
                    help="a variant: the shipped config with these settings (repeatable)")
    ap.add_argument("--scale", type=float, default=0.125, help="rates and batch sizes times this (0 < scale <= 1)")
    ap.add_argument("--offline-points", type=offline_points, default=H100_OFFLINE_POINTS,
                    help="PAIRS:SAMPLES_PER_S at two batch sizes, the GPU's measured Offline throughput")
    ap.add_argument("--dispatch-ms", type=float, default=0.45, help="host time per dispatch")
    ap.add_argument("--seed", type=int, default=1, help="of the stall windows' jitter")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    args = ap.parse_args()
    if not 0 < args.scale <= 1 or args.repeats < 1 or args.duration <= 0 or args.qps <= 0 or args.dispatch_ms < 0:
        ap.error("need 0 < --scale <= 1, --repeats >= 1, --duration > 0, --qps > 0, --dispatch-ms >= 0")
    try:
        base = configs.resolve("Server", "default", "cuda", H100).settings
        variants = [("shipped", base)] + [
            (spec, base.with_values(configs.parse_overrides(spec.split(","), "--compare"), "--compare"))
            for spec in args.compare]
    except UserError as exc:
        ap.error(str(exc))
    offsets = partition_offsets(aggregation_sizes(CRITEO_TB_TEST_PAIRS, load_quantiles()))
    pairs_per_sample = float(offsets[-1]) / (len(offsets) - 1)
    model = Model(offsets, fit_batch_time(args.offline_points, pairs_per_sample), args.dispatch_ms / 1e3,
                  args.scale, args.qps, args.duration)
    print(f"model: a batch takes {model.batch_time.fixed_s * 1e3:.3f} ms + pairs / "
          f"{model.batch_time.pairs_per_s / 1e6:.1f} M/s; target {args.qps:,.0f}/s at scale {args.scale} "
          f"({args.qps * args.scale:,.0f}/s here)", flush=True)
    rows = []
    for repeat in range(args.repeats):
        for stall in args.stalls:
            for label, settings in variants:
                row = {"variant": label, "repeat": repeat,
                       **run_one(model, settings, STALLS[stall], args.seed + repeat)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    table = summary(rows, [label for label, _ in variants], args.stalls)
    print(f"\n{'stall':6} {'variant':60} {'valid':>6} {'p99 med':>8} {'p99 max':>8} {'pad %':>6}")
    for t in table:
        med, top = (f"{t[k]:.2f}" if t[k] is not None else "-" for k in ("median_p99_ms", "max_p99_ms"))
        print(f"{t['stall']:6} {t['variant'][:60]:60} {t['valid']:>3}/{t['runs']:<2} {med:>8} {top:>8} "
              f"{t['median_padding_percent']:>6.2f}")
    path = write_report(args.out, "bench_server_model.json", {
        "model": {"fixed_ms": model.batch_time.fixed_s * 1e3, "pairs_per_s": model.batch_time.pairs_per_s,
                  "offline_points": args.offline_points, "dispatch_ms": args.dispatch_ms, "scale": args.scale,
                  "qps": args.qps, "duration_s": args.duration,
                  "stalls": {n: STALLS[n].__dict__ for n in args.stalls}},
        "runs": rows, "summary": table})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
