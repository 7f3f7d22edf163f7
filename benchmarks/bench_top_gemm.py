#!/usr/bin/env python3
"""The top MLP's hidden layers: Triton GEMMs (top_mlp.py) against CUTLASS kernels with thread-block clusters and
TMA multicast (csrc/top_gemm_cutlass.cu, `make kernels`), on the same weights and the same real inputs.

For each CUTLASS variant (kernel_library.VARIANTS) in the three hidden layers (the final layer in Triton):
* agreement: each layer on the Triton path's input, against the Triton layer's int8 output (both use the folded
  epilogue: at most one step apart, rarely), and the probabilities of the whole top MLP;
* per-layer time (median of CUDA-event timings) and int8 TOPS, the final layer's included (with --final, each
  variant also with the final layer on CUTLASS: the 256 -> 1 dot in its epilogue, "<variant>+final");
* the four layers as one CUDA graph: short timing, then replayed back to back for --sustain seconds per round
  (SM clock and power read each second; a GPU at its 700 W limit lowers its clock, so only these numbers rank
  kernels for a long LoadGen run).
* with --chunks C: each variant's four layers over the batch cut into C row chunks, one chunk's layers after the
  other, in one graph ("<variant>@C", TopMLP.row_chunks, the engine's top_mlp_row_chunks): a chunk's intermediates (C = 8: 32 MB per layer) can stay in the 50 MB L2
  between its layers, where a whole batch's go through HBM.

    python3 benchmarks/bench_top_gemm.py [--batch 262144] [--variants all] [--sustain 5] [--rounds 2] [--chunks 8,16]
                                         [--out DIR]
Prints a table and writes bench_top_gemm.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from bench_inputs import write_report  # noqa: E402
from bench_cuda import gpu_bench_model, timed, whole_batch_graph  # noqa: E402
from bench_operand_power import LAYOUT, real_top_input, rounds_cell, sustained_rounds  # noqa: E402
from dlrm_bench.engines.cuda.kernel_library import (VARIANTS, KernelsUnavailable, kernel_library,  # noqa: E402
                                                  in_logical_order, in_stored_order)
from dlrm_bench.engines.cuda.top_mlp import TopMLP  # noqa: E402


def top_with(qm, device, name: str) -> TopMLP:
    """The top MLP of config `name`: "triton" (the default configs), a CUTLASS variant for the hidden layers, or
    "<variant>+final" (the final layer on CUTLASS too). A variant may name one kernel per hidden layer, "a/b/c"
    (the final layer then goes with the last)."""
    top = TopMLP(qm, device, interaction_layout=LAYOUT)
    variant, _, final = name.partition("+")
    if variant != "triton":
        per_layer = variant.split("/")
        for i, cfg in enumerate(top.configs[:-1]):
            cfg.cutlass = per_layer[min(i, len(per_layer) - 1)]
    if final:
        top.configs[-1].cutlass = top.configs[-2].cutlass
    top.prepare_column_orders()
    return top


def agreement(top: TopMLP, inputs: list[torch.Tensor], want: list[torch.Tensor], n: int) -> list[dict]:
    """Each hidden layer on inputs[i], against want[i] (the reference path's output of that layer)."""
    rows = []
    for i, (x, ref) in enumerate(zip(inputs, want)):
        out = torch.empty_like(ref)
        top.layer(i, in_stored_order(x, top.stored_order(i - 1)), out, n)
        diff = (in_logical_order(out, top.stored_order(i)).to(torch.int16) - ref.to(torch.int16)).abs()
        rows.append({"max_step": int(diff.max()), "differing": float((diff > 0).float().mean())})
    return rows


def layer_times(top: TopMLP, inputs: list[torch.Tensor], n: int) -> list[dict]:
    """Median ms and int8 TOPS of each layer (inputs: one per layer; the last is the final layer's)."""
    rows = []
    for i, x in enumerate(inputs):
        width, k = top.w[i].shape
        final = i == len(top.w) - 1
        out = torch.empty(n, device=x.device) if final else torch.empty(n, width, dtype=torch.int8, device=x.device)
        ms = timed(lambda i=i, x=x, out=out: top.layer(i, x, out, n))
        rows.append({"ms": ms, "tops": 2 * n * width * k / ms / 1e9})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=262144, help="pairs per batch")
    ap.add_argument("--rows-scale", type=float, default=0.02, help="fraction of the full table rows")
    ap.add_argument("--variants", default="all", help="comma-separated kernel_library.VARIANTS names (or \"a/b/c\": "
                    "one per hidden layer), or all")
    ap.add_argument("--sustain", type=float, default=5.0, help="seconds of back-to-back replay per config and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the configs")
    ap.add_argument("--final", action="store_true", help="also each variant with the CUTLASS final layer")
    ap.add_argument("--chunks", default="", help="comma-separated row-chunk counts: also each variant (with --final, "
                    "with the CUTLASS final layer) run chunk by chunk in one graph")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    args = ap.parse_args()
    names = list(VARIANTS) if args.variants == "all" else [v for v in args.variants.split(",") if v]
    try:
        chunk_counts = [int(c) for c in args.chunks.split(",") if c]
    except ValueError:
        ap.error(f"--chunks: expected comma-separated integers, got {args.chunks!r}")
    if any(c < 2 for c in chunk_counts):
        ap.error(f"--chunks: each count must be >= 2, got {args.chunks!r}")
    unknown = [v for v in names if any(part not in VARIANTS for part in v.split("/"))]
    if unknown:
        ap.error(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    model = gpu_bench_model("bench_top_gemm.py", args.rows_scale)
    if model is None:
        return 2
    try:
        kernel_library()
    except KernelsUnavailable as exc:
        print(f"bench_top_gemm.py: error: {exc}", file=sys.stderr)
        return 2
    device, cards, qm, tables, offsets = model
    n = args.batch
    x0 = real_top_input(qm, tables, offsets, cards, device, n)
    base = top_with(qm, device, "triton")
    buffers = [torch.empty(n, w, dtype=torch.int8, device=device) for w in base.widths]
    probs = torch.empty(n, device=device)
    base(x0, buffers, probs, n)
    inputs = [x0, *buffers[:-1]]
    report: dict = {"device": torch.cuda.get_device_name(), "pairs": n, "configs": {}}
    graphs, keep_alive = {}, {}
    configs = ["triton", *names] + ([f"{v}+final" for v in names] if args.final else [])
    for name in configs:
        top = base if name == "triton" else top_with(qm, device, name)
        row: dict = {}
        try:
            row["layers"] = layer_times(top, [*inputs, buffers[-1]], n)
            if name != "triton":
                row["agreement"] = agreement(top, inputs, buffers, n)
                own = [torch.empty_like(b) for b in buffers]
                own_probs = torch.empty_like(probs)
                top(x0, own, own_probs, n)
                row["max_prob_diff"] = float((own_probs - probs).abs().max())
                graph_buffers = own
            else:
                graph_buffers, own_probs = buffers, probs
            keep_alive[name] = (top, graph_buffers, own_probs)  # a graph does not own the tensors it replays on
            graphs[name] = whole_batch_graph(lambda t=top, b=graph_buffers, p=own_probs: t(x0, b, p, n))
            row["graph_ms"] = timed(graphs[name].replay)
        except RuntimeError as exc:  # a variant that cannot run here is reported, the others still run
            row["error"] = str(exc)
        report["configs"][name] = row
        print(name, json.dumps(row), flush=True)
    for chunks in chunk_counts:
        for variant in [f"{v}+final" if args.final else v for v in names]:
            if variant not in keep_alive:
                continue
            _, graph_buffers, own_probs = keep_alive[variant]
            name = f"{variant}@{chunks}"
            top = top_with(qm, device, variant)
            top.row_chunks = chunks
            keep_alive[name] = top
            graphs[name] = whole_batch_graph(lambda t=top, b=graph_buffers, p=own_probs: t(x0, b, p, n))
            graphs[name].replay()
            chunk_probs = own_probs.clone()
            graphs[variant].replay()
            row = {"layers": [], "graph_ms": timed(graphs[name].replay),
                   "max_prob_diff": float((chunk_probs - own_probs).abs().max())}
            report["configs"][name] = row
            print(name, json.dumps(row), flush=True)
    for name, rounds in sustained_rounds(graphs, n, args.sustain, args.rounds).items():
        report["configs"][name]["sustained"] = rounds
    write_report(args.out, "bench_top_gemm.json", report)
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    print(f"\n{report['device']}, top MLP on {report['pairs']} pairs (layers by config)")
    print(f"{'config':<33} {'layer ms (TOPS)':<57} {'max step/differing':<22} {'graph':>6}  "
          "sustained per round: ms, MHz, W, uJ/pair")
    for name, row in report["configs"].items():
        if "error" in row:
            print(f"{name:<33} error: {row['error']}")
            continue
        layers = " ".join(f"{r['ms']:.3f}({r['tops']:.0f})" for r in row["layers"])
        agree = " ".join(f"{a['max_step']}/{a['differing']:.4f}" for a in row.get("agreement", []))
        print(f"{name:<33} {layers:<57} {agree:<22} {row['graph_ms']:6.3f}  {rounds_cell(row['sustained'])}")


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
