"""Offline-like throughput of the CPU engine against the FP32 reference engine, and where the CPU engine's time goes.

Both engines predict the same contiguous pair range of the test split in one process, alternating repeat by repeat
(so a noisy neighbour slows both alike); the table gives medians, the ratio of the medians and the median of the
per-repeat ratios. samples/s are pairs/s over the mean pairs per LoadGen sample, for the dataset's own partition
and for MLPerf's trace (89,137,319 / 330,067 = 270 pairs). Then one profiled pass of the CPU engine: seconds per
stage, us per pair, GOPS for the GEMM stages.

    .venv/bin/python benchmarks/bench_cpu.py                       # synthetic-tiny if built, else a fixture
    .venv/bin/python benchmarks/bench_cpu.py --dataset-dir D --model M --pairs 65536 --repeats 5

Writes build/bench/bench_cpu.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.conftest (fixture dataset writer)
sys.path.insert(0, str(REPO / "benchmarks"))

from dlrm_bench.criteo.dataset import Split, load_meta, open_split  # noqa: E402
from dlrm_bench.criteo.schema import CRITEO_TB_TEST_PAIRS, CRITEO_TB_TEST_SAMPLES  # noqa: E402
from bench_inputs import pick_inputs  # noqa: E402
from dlrm_bench.engines import create_engine  # noqa: E402
from dlrm_bench.engines.base import Engine  # noqa: E402
from dlrm_bench.paths import scratch_path  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402

MLPERF_PAIRS_PER_SAMPLE = CRITEO_TB_TEST_PAIRS / CRITEO_TB_TEST_SAMPLES
STAGE_OPS = {"bottom": 2 * (16 * 512 + 512 * 256 + 256 * 128), "interaction": 2 * 351 * 128,
             "top_l.0": 2 * 832 * 1024, "top_l.2": 2 * 1024 * 1024, "top_l.4": 2 * 1024 * 512,
             "top_l.6+8": 2 * (512 * 256 + 256)}
"""Integer ops per pair each stage performs (top_l.0 as the engine runs it: K = 830 padded to 832)."""


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def mean_pairs_per_sample(split: Split) -> float | None:
    path = split.directory / "sample_partition.npy"
    if not path.exists():
        return None
    offsets = np.load(path)
    return float(offsets[-1] / max(1, offsets.size - 1))


def throughput(engines: dict[str, Engine], pairs: dict[str, int], repeats: int) -> dict[str, list[float]]:
    """pairs/s per repeat per engine, engines alternating within each repeat."""
    rates: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for name, engine in engines.items():
            n = pairs[name]
            rates[name].append(n / timed(lambda: engine.predict_ranges(np.array([0]), np.array([n]))))
    return rates


def profile(engine: Engine, pairs: int) -> dict[str, dict[str, float]]:
    """One profiled pass: per stage seconds, us per pair, share of the total and GOPS (GEMM stages)."""
    engine.profile.enabled = True
    engine.profile.reset()
    engine.predict_ranges(np.array([0]), np.array([pairs]))
    engine.profile.enabled = False
    total = sum(engine.profile.seconds.values())
    out = {}
    for stage, seconds in engine.profile.seconds.items():
        row = {"seconds": seconds, "us_per_pair": 1e6 * seconds / pairs, "share": seconds / total}
        if stage in STAGE_OPS:
            row["gops"] = STAGE_OPS[stage] * pairs / seconds / 1e9
        out[stage] = row
    return out


def summarize(rates: dict[str, list[float]], baseline: str, per_sample: dict[str, float],
              threads: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, values in rates.items():
        med = statistics.median(values)
        row = {"pairs_per_s_median": med, "pairs_per_s_all": values,
               "ratio_of_medians": med / statistics.median(rates[baseline]),
               "median_of_ratios": statistics.median(v / b for v, b in zip(values, rates[baseline]))}
        for label, mean in per_sample.items():
            row[f"samples_per_s_at_{label}"] = med / mean
            row[f"samples_per_s_per_core_at_{label}"] = med / mean / threads
        out[name] = row
    return out


def print_table(summary: dict[str, dict[str, float]], stages: dict[str, dict[str, float]],
                per_sample: dict[str, float]) -> None:
    labels = list(per_sample)
    head = f"{'engine':<16}{'pairs/s':>12}" + "".join(f"{'  samples/s@' + l:>26}" for l in labels) + \
        f"{'x reference':>13}{'median ratio':>14}"
    print(head)
    for name, row in summary.items():
        print(f"{name:<16}{row['pairs_per_s_median']:>12,.0f}"
              + "".join(f"{row['samples_per_s_at_' + l]:>26,.1f}" for l in labels)
              + f"{row['ratio_of_medians']:>13.2f}{row['median_of_ratios']:>14.2f}")
    print(f"\n{'cpu stage':<16}{'us/pair':>10}{'share':>9}{'GOPS':>9}")
    for stage, row in stages.items():
        gops = f"{row['gops']:>9.1f}" if "gops" in row else f"{'':>9}"
        print(f"{stage:<16}{row['us_per_pair']:>10.2f}{100 * row['share']:>8.1f}%{gops}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset-dir", type=Path, default=None)
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--pairs", type=int, default=65536, help="pairs per repeat for the cpu engine")
    p.add_argument("--reference-pairs", type=int, default=16384, help="pairs per repeat for the reference")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0,
                   help="0 = every core (torch's thread count is process-wide: the reference runs with it too)")
    p.add_argument("--batch-size", type=int, default=16384, help="cpu engine pairs per internal batch")
    p.add_argument("--gemms", default="int8",
                   help="cpu engine GEMM back ends to time, comma-separated (int8 = oneDNN, fp32 = exact fp32 "
                        "GEMMs); the first is profiled and is the 'cpu' row")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    data, model_path, what = pick_inputs(args, "cpu", 4096)
    meta = load_meta(data)
    split = open_split(data / "test")
    pairs = min(args.pairs, len(split))
    settings = Settings(threads=args.threads, batch_size=args.batch_size)
    gemms = [g.strip() for g in args.gemms.split(",") if g.strip()]
    engines: dict[str, Engine] = {"reference": create_engine("reference", model_path, meta, Settings(device="cpu"))}
    for i, gemm in enumerate(gemms):
        name = "cpu" if i == 0 else f"cpu[{gemm}]"
        engines[name] = create_engine("cpu", model_path, meta, replace(settings, cpu_gemm=gemm))
    counts = {name: pairs for name in engines}
    counts["reference"] = min(args.reference_pairs, pairs)
    for engine in engines.values():
        engine.load(split)
        engine.warmup()
        engine.predict_ranges(np.array([0]), np.array([min(pairs, 4096)]))
    threads = engines["cpu"].threads
    per_sample = {"mlperf_270": MLPERF_PAIRS_PER_SAMPLE}
    dataset_mean = mean_pairs_per_sample(split)
    if dataset_mean is not None:
        per_sample = {"dataset_mean": dataset_mean, **per_sample}

    rates = throughput(engines, counts, args.repeats)
    summary = summarize(rates, "reference", per_sample, threads)
    stages = profile(engines["cpu"], pairs)
    print(f"dataset {data} ({what}), model {model_path}\nthreads {threads}, cpu batch {args.batch_size}, "
          f"cpu gemm {gemms[0]}, "
          f"pairs per repeat: {counts}, repeats {args.repeats}, mean pairs/sample {per_sample}\n")
    print_table(summary, stages, per_sample)

    result = {"dataset_dir": str(data), "model_path": str(model_path), "inputs": what, "threads": threads,
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.processor() or
              platform.machine(), "cores_visible": os.cpu_count(), "torch": torch.__version__,
              "loadavg_at_end": os.getloadavg(), "pairs_per_repeat": counts, "repeats": args.repeats,
              "pairs_per_sample": per_sample, "engines": {n: e.describe() for n, e in engines.items()},
              "throughput": summary, "cpu_stages": stages}
    out = args.out or scratch_path() / "bench" / "bench_cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    for engine in engines.values():
        engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
