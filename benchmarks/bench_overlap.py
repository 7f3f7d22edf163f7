#!/usr/bin/env python3
"""Do batches on separate CUDA streams overlap on the GPU? Throughput of the whole kernel pipeline with 1-3
batches in flight, for top-MLP GEMMs with one or two persistent programs per SM, with and without stream
priorities.

The idea under test: the gather + interaction is memory-bound and the GEMMs are tensor-core-bound, so one batch's
interaction could run beside another batch's GEMMs if the GEMM leaves room on each SM (one program per SM instead
of two). Each in-flight batch ("lane") has its own inputs and buffers and is recorded once as a CUDA graph, so the
host's launch cost is out of the measurement; lanes are replayed round-robin on their own streams.

    python3 benchmarks/bench_overlap.py [--rows-scale 1.0] [--pairs 262144] [--rounds 30] [--out DIR]
Prints a table and writes bench_overlap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_inputs import write_report  # noqa: E402
from bench_cuda import gpu_bench_model, skewed_ids  # noqa: E402
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.interaction import DEFAULT_LAYOUT, Interaction  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import TopMLP  # noqa: E402
from dlrm_bench.quant.recipe import TOP_INPUT_PAD  # noqa: E402


class Lane:
    """One batch in flight: its own inputs and buffers, its stream, and its pipeline recorded as a CUDA graph."""

    def __init__(self, kernels: tuple, cards: list[int], device: torch.device, n: int, seed: int,
                 priority: int) -> None:
        bottom, inter, top = kernels
        self.stream = torch.cuda.Stream(device, priority=priority)
        numeric = torch.randint(-20, 127, (n, 13), dtype=torch.int8, device=device)
        cat = skewed_ids(cards, n, device, seed)
        top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
        buffers = [torch.empty(n, w, dtype=torch.int8, device=device) for w in top.widths]
        probs = torch.empty(n, device=device)
        self.tensors = [numeric, cat, top_in, *buffers, probs]  # the graph holds their addresses: keep them

        def body() -> None:
            bottom(numeric, None, n, top_in)
            inter(cat, None, n, top_in)
            top(top_in, buffers, probs, n)

        with torch.cuda.stream(self.stream):
            body()  # compile and warm up before recording
        self.stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            body()

    def replay(self) -> None:
        with torch.cuda.stream(self.stream):
            self.graph.replay()


def pairs_per_second(lanes: list[Lane], n: int, rounds: int, repeats: int = 3) -> float:
    """Median over `repeats` of (rounds x lanes x n pairs) / wall time, lanes replayed round-robin."""
    rates = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(rounds):
            for lane in lanes:
                lane.replay()
        torch.cuda.synchronize()
        rates.append(rounds * len(lanes) * n / (time.perf_counter() - t))
    return float(np.median(rates))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows-scale", type=float, default=1.0, help="fraction of the full table rows")
    ap.add_argument("--pairs", type=int, default=262144, help="pairs per batch")
    ap.add_argument("--rounds", type=int, default=30, help="round-robin rounds per measurement")
    ap.add_argument("--lanes", default="1,2,3", help="batches in flight to try")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    args = ap.parse_args()
    model = gpu_bench_model("bench_overlap.py", args.rows_scale)
    if model is None:
        return 2
    device, cards, qm, tables, offsets = model
    low, high = 0, -1  # torch.cuda.Stream priorities: 0 (default) or negative, lower runs first
    report = {"device": torch.cuda.get_device_name(), "pairs": args.pairs, "rounds": args.rounds,
              "table_rows": sum(cards), "results": []}
    for programs in (2, 1):
        kernels = (BottomMLP(qm, device), Interaction(qm, tables, offsets, layout=DEFAULT_LAYOUT),
                   TopMLP(qm, device, interaction_layout=DEFAULT_LAYOUT, programs_per_sm=programs))
        for count in [int(x) for x in args.lanes.split(",")]:
            for staggered in ((False, True) if count > 1 else (False,)):
                lanes = [Lane(kernels, cards, device, args.pairs, 7 + i,
                              high if staggered and i == 0 else low) for i in range(count)]
                rate = pairs_per_second(lanes, args.pairs, args.rounds)
                row = {"gemm_programs_per_sm": programs, "lanes": count, "first_lane_high_priority": staggered,
                       "pairs_per_second": rate, "ms_per_batch": args.pairs / rate * 1e3}
                report["results"].append(row)
                print(json.dumps(row), flush=True)
                del lanes
                torch.cuda.empty_cache()
    base = report["results"][0]["pairs_per_second"]
    print(f"\n{report['device']}, {args.pairs} pairs per batch, {args.rounds} rounds (medians of 3)")
    print(f"{'GEMM programs/SM':>16} {'lanes':>5} {'priority':>8} {'M pairs/s':>10} {'ms/batch':>9} {'x base':>7}")
    for r in report["results"]:
        print(f"{r['gemm_programs_per_sm']:>16} {r['lanes']:>5} {'staggered' if r['first_lane_high_priority'] else '-':>8} "
              f"{r['pairs_per_second'] / 1e6:10.1f} {r['ms_per_batch']:9.3f} {r['pairs_per_second'] / base:7.3f}")
    write_report(args.out, "bench_overlap.json", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
