#!/usr/bin/env python3
"""Does the memory-bound front overlap the compute-bound top MLP? One batch as a CUDA graph, serial against the
sliced pipeline (engines/cuda/sliced_pipeline.py: the front of slice k + 1 beside the top MLP of slice k), with the
top GEMMs held to fewer SMs or not, at the card's power limit.

Same kernels as the engine (bottom MLP, gather + interaction in the paired layout, the top MLP on --top-gemm), the
bench model's tables at --rows-scale of the full rows (1.0: the 24 GB of the criteo-tb-random preset) and skewed
ids spread over each table as the preset places its hot rows (bench_cuda.scattered). Per config: the short graph
time, the probabilities against the serial graph's, and each graph replayed back to back for --sustain seconds
per round (SM clock and power read each second): ms per batch, M pairs/s and uJ per pair. "front only" and
"top only" split the serial batch's time and energy between the two.

    python3 benchmarks/bench_front_overlap.py [--slices 2,4] [--top-sms 0,124,116,100] [--sustain 4] [--rounds 1]
        [--top-gemm 128x128_c1x2_pingpong_fma --cutlass-final] [--normal-priority] [--out DIR]
Prints a table and writes bench_front_overlap.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_inputs import write_report  # noqa: E402
from bench_cuda import apply_top_gemm, gpu_bench_model, int_list, scattered, skewed_ids, timed, whole_batch_graph  # noqa: E402
from bench_operand_power import LAYOUT, rounds_cell, sustained_rounds  # noqa: E402
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.cutlass_gemm import VARIANTS as CUTLASS_VARIANTS  # noqa: E402
from dlrm_bench.engines.cuda.interaction import Interaction  # noqa: E402
from dlrm_bench.engines.cuda.sliced_pipeline import SlicedPipeline, slice_bounds  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import TopMLP  # noqa: E402
from dlrm_bench.quant.recipe import TOP_INPUT_PAD  # noqa: E402


class Batch:
    """One batch's inputs, buffers and kernels (module docstring); front / top take a slice (lo, hi)."""

    def __init__(self, qm, tables, offsets, cards, device, n: int) -> None:
        self.n = n
        self.numeric = torch.randint(-20, 127, (n, 13), dtype=torch.int8, device=device)
        self.cat = scattered(skewed_ids(cards, n, device, 100 + n), cards, 100 + n)
        self.bottom = BottomMLP(qm, device)
        self.inter = Interaction(qm, tables, offsets, layout=LAYOUT)
        self.top = TopMLP(qm, device, interaction_layout=LAYOUT)
        self.full_sms = self.top.num_sms
        self.top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
        self.hidden = [torch.empty(n, w, dtype=torch.int8, device=device) for w in self.top.widths]
        self.probs = torch.empty(n, device=device)

    def front(self, lo: int, hi: int) -> None:
        self.bottom(self.numeric[lo:hi], None, hi - lo, self.top_in[lo:hi])
        self.inter(self.cat[lo:hi], None, hi - lo, self.top_in[lo:hi])

    def top_part(self, lo: int, hi: int) -> None:
        self.top(self.top_in[lo:hi], [h[lo:hi] for h in self.hidden], self.probs[lo:hi], hi - lo)


def config_graphs(batch: Batch, slices: list[int], top_sms: list[int], normal_priority: bool
                  ) -> tuple[dict, dict, dict, list]:
    """name -> CUDA graph of one batch; name -> |probs - serial probs| max; name -> the engine settings of a sliced
    config; keep-alive list (the pipelines' streams). The GEMMs' SM count is read when a graph records, so each
    config sets it before its capture."""
    n = batch.n
    graphs, diffs, settings, keep = {}, {}, {}, []
    batch.top.num_sms = batch.full_sms
    graphs["serial"] = whole_batch_graph(lambda: (batch.front(0, n), batch.top_part(0, n)))
    graphs["front only"] = whole_batch_graph(lambda: batch.front(0, n))
    graphs["top only"] = whole_batch_graph(lambda: batch.top_part(0, n))
    graphs["serial"].replay()
    torch.cuda.synchronize()
    want = batch.probs.clone()
    priorities = [True, False] if normal_priority else [True]
    for parts in slices:
        for sms in top_sms:
            for high in priorities:
                name = f"{parts} slices, top on {sms or batch.full_sms} SMs{'' if high else ', normal priority'}"
                batch.top.num_sms = sms or batch.full_sms
                pipe = SlicedPipeline(batch.numeric.device, parts, top_high_priority=high)
                keep.append(pipe)
                graphs[name] = whole_batch_graph(lambda p=pipe: p(batch.front, batch.top_part, n))
                batch.probs.zero_()
                graphs[name].replay()
                torch.cuda.synchronize()
                diffs[name] = float((batch.probs - want).abs().max())
                if high:  # the engine's pipeline
                    settings[name] = {"front_overlap_slices": parts, "top_gemm_sms": sms}
    batch.top.num_sms = batch.full_sms
    return graphs, diffs, settings, keep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=262144, help="pairs per batch")
    ap.add_argument("--rows-scale", type=float, default=1.0, help="fraction of the full table rows")
    ap.add_argument("--slices", type=int_list, default="2,4", help="slices per batch of the sliced configs")
    ap.add_argument("--top-sms", default="0,124,116,100",
                    help="comma-separated SM counts for the top GEMMs in the sliced configs (0: all)")
    ap.add_argument("--normal-priority", action="store_true",
                    help="also each sliced config with the top stream at normal priority")
    ap.add_argument("--top-gemm", default="128x128_c1x2_pingpong_fma", choices=["triton", *CUTLASS_VARIANTS],
                    help="the hidden top layers' kernels (as the engine's top_gemm)")
    ap.add_argument("--cutlass-final", action="store_true", help="the final layer on CUTLASS too")
    ap.add_argument("--sustain", type=float, default=4.0, help="seconds of back-to-back replay per config and round")
    ap.add_argument("--rounds", type=int, default=1, help="rounds over the configs")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    args = ap.parse_args()
    try:
        top_sms = [int(v) for v in args.top_sms.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--top-sms: expected comma-separated integers, got {args.top_sms!r}")
    if not top_sms or min(top_sms) < 0 or args.batch < 1 or args.rounds < 1 or args.sustain <= 0:
        ap.error("--top-sms needs counts >= 0; --batch, --rounds and --sustain must be positive")
    if args.cutlass_final and args.top_gemm == "triton":
        ap.error("--cutlass-final needs a CUTLASS --top-gemm")
    model = gpu_bench_model("bench_front_overlap.py", args.rows_scale)
    if model is None:
        return 2
    device, cards, qm, tables, offsets = model
    batch = Batch(qm, tables, offsets, cards, device, args.batch)
    if not apply_top_gemm(batch.top, args.top_gemm, args.cutlass_final, "bench_front_overlap.py"):
        return 2
    graphs, diffs, settings, _keep = config_graphs(batch, args.slices, top_sms, args.normal_priority)
    report: dict = {"device": torch.cuda.get_device_name(), "pairs": args.batch, "rows_scale": args.rows_scale,
                    "top_gemm": args.top_gemm, "cutlass_final_layer": args.cutlass_final,
                    "slice_bounds": {p: slice_bounds(args.batch, p) for p in args.slices}, "configs": {}}
    for name, graph in graphs.items():
        report["configs"][name] = {"graph_ms": timed(graph.replay), "max_prob_diff": diffs.get(name),
                                   "settings": settings.get(name)}
        print(name, json.dumps(report["configs"][name]), flush=True)
    for name, rounds in sustained_rounds(graphs, args.batch, args.sustain, args.rounds).items():
        report["configs"][name]["sustained"] = rounds
    report["best_settings"] = best_settings(report["configs"])
    write_report(args.out, "bench_front_overlap.json", report)
    print_table(report)
    return 0


def best_settings(configs: dict) -> dict | None:
    """The engine settings of the sliced config with the most sustained pairs/s (median over rounds), if it beats
    the serial graph; else None."""
    def rate(row: dict) -> float:
        return float(np.median([r["m_pairs_per_second"] for r in row["sustained"]]))

    candidates = [row for row in configs.values() if row.get("settings")]
    best = max(candidates, key=rate, default=None)
    return best["settings"] if best is not None and rate(best) > rate(configs["serial"]) else None


def print_table(report: dict) -> None:
    print(f"\n{report['device']}, {report['pairs']} pairs, tables at {report['rows_scale']} of the full rows, top "
          f"GEMMs {report['top_gemm']}{' + final' if report['cutlass_final_layer'] else ''}")
    serial = report["configs"]["serial"]["sustained"][0]["m_pairs_per_second"]
    print(f"{'config':<44} {'graph ms':>9} {'prob diff':>10} {'vs serial':>9}  sustained per round: ms, MHz, W, "
          "uJ/pair")
    for name, row in report["configs"].items():
        diff = "" if row["max_prob_diff"] is None else f"{row['max_prob_diff']:.1e}"
        ratio = row["sustained"][0]["m_pairs_per_second"] / serial
        print(f"{name:<44} {row['graph_ms']:9.3f} {diff:>10} {ratio:9.3f}  {rounds_cell(row['sustained'])}")
    print(f"best engine settings: {report['best_settings']}")


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
