#!/usr/bin/env python3
"""Hot/cold tables and host-staged inputs of the CUDA engine on the criteo-tb-random preset (run
`dlrm-bench make-random-preset` first; GPU only).

1. embedding_weights_on_gpu_part in (1.0, 0.5, 0.2, 0.05): pairs/s with the test set resident on the GPU, and the
   fraction of lookups served from the GPU (the rest are read from pinned host memory over the bus).
2. start_from_device false: pairs/s and bytes moved host-to-device per pair, with and without
   compress_categorical_inputs (16 packed words instead of 26 ids).
Workload: LoadGen-like Offline batches: random samples of the aggregation trace, sorted, cut into gpu_batch_size
pairs. Prints a table and writes bench_hot_cold.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dlrm_bench.criteo.dataset import load_meta, open_partition, open_split  # noqa: E402
from dlrm_bench.engines.base import cut_by_pairs  # noqa: E402
from dlrm_bench.engines.cuda.engine import CudaEngine  # noqa: E402
from dlrm_bench.paths import models_dir, preprocessed_dir  # noqa: E402
from dlrm_bench.quant.artifacts import load_int8_model  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402


def offline_batches(offsets: np.ndarray, samples: int, batch_pairs: int, seed: int) -> list[tuple]:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.integers(0, len(offsets) - 1, samples))
    starts, ends = offsets[idx].astype(np.int64), offsets[idx + 1].astype(np.int64)
    return [(starts[lo:hi], ends[lo:hi]) for lo, hi in cut_by_pairs(ends - starts, batch_pairs)]


def throughput(engine: CudaEngine, batches: list[tuple], repeats: int = 3) -> float:
    """Median pairs/s over `repeats` passes of all batches, all in flight through the engine's bundles."""
    pairs = sum(int((e - s).sum()) for s, e in batches)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        futures = [engine.predict_ranges_async(s, e) for s, e in batches]
        for f in futures:
            f.result()
        rates.append(pairs / (time.perf_counter() - t))
    return float(np.median(rates))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=60000, help="LoadGen samples per pass")
    ap.add_argument("--parts", default="1.0,0.5,0.2,0.05")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    args = ap.parse_args()
    data_dir = preprocessed_dir("criteo-tb-random")
    meta = load_meta(data_dir)
    split = open_split(data_dir / "test")
    offsets = open_partition(data_dir / "test", len(split))
    model = load_int8_model(models_dir() / "criteo-tb-random", meta)
    base = Settings(gpu_batch_size=262144, gpu_num_bundles=3, complete_threads=2)
    batches = offline_batches(offsets, args.samples, base.gpu_batch_size, 0)
    report = {"device": torch.cuda.get_device_name(), "pairs_per_pass": sum(int((e - s).sum()) for s, e in batches),
              "hot_cold": [], "staged": []}
    freq = data_dir / "row_frequencies.bin"
    for part in [float(p) for p in args.parts.split(",")]:
        engine = CudaEngine(model, replace(base, embedding_weights_on_gpu_part=part), frequencies_file=freq)
        engine.load(split)
        engine.warmup()
        row = {"part": part, "pairs_per_second": throughput(engine, batches),
               "device_lookup_fraction": engine.store.device_lookup_fraction(engine.categorical_dev,
                                                                              torch.from_numpy(model.table_offsets)),
               "gpu_table_gb": engine.store.hot.numel() / 1e9}
        report["hot_cold"].append(row)
        print(json.dumps(row), flush=True)
        engine.close()
        del engine
        torch.cuda.empty_cache()
    for compress in (False, True):
        engine = CudaEngine(model, replace(base, start_from_device=False, compress_categorical_inputs=compress,
                                           staging_threads=8), frequencies_file=freq)
        engine.load(split)
        engine.warmup()
        engine.bytes_to_device = 0
        rate = throughput(engine, batches, repeats=2)
        moved = engine.bytes_to_device / (2 * report["pairs_per_pass"])
        row = {"compress": compress, "pairs_per_second": rate, "bytes_to_device_per_pair": moved}
        report["staged"].append(row)
        print(json.dumps(row), flush=True)
        engine.close()
        del engine
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_hot_cold.json").write_text(json.dumps(report, indent=2))
    print(f"\n{report['device']}: {report['pairs_per_pass']:,} pairs per pass")
    print(f"{'gpu part':>8} {'M pairs/s':>10} {'lookups on GPU':>15} {'GPU table GB':>13}")
    for r in report["hot_cold"]:
        print(f"{r['part']:8.2f} {r['pairs_per_second'] / 1e6:10.1f} {r['device_lookup_fraction']:15.3f} "
              f"{r['gpu_table_gb']:13.1f}")
    for r in report["staged"]:
        print(f"staged inputs, compress={r['compress']}: {r['pairs_per_second'] / 1e6:.1f} M pairs/s, "
              f"{r['bytes_to_device_per_pair']:.0f} B/pair to the device")
    return 0


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
