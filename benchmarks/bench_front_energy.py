#!/usr/bin/env python3
"""Where the front's energy goes: the bottom MLP and the gather + interaction, each alone, by tile variant and by
input, replayed back to back at the card's power limit (uJ per pair = W / pairs per second).

At the 700 W limit a kernel's cost is its energy, not its short timing. The front (bottom MLP + gather +
interaction) drew 697 W on an H100 while it ran alone (bench_front_overlap.py): it is not an idle, memory-bound
stage. Per config, one CUDA graph of the kernel on --batch pairs, replayed for --sustain seconds (SM clock and
power read each second):

* bottom MLP variants: rows per program / chunk / warps / pipeline stages (bottom_mlp.BottomMLP), and the CUDA
  kernel (csrc/bottom_mlp_wgmma.cu), whose output must equal the Triton kernel's byte for byte;
* interaction variants: pairs per program / warps / iterations / stages (interaction.Interaction), on the bench's
  skewed ids spread over each table as the preset places its hot rows; and the CUDA kernel
  (csrc/interaction_mma.cu) by pairs per warp, whose output must equal the Triton kernel's byte for byte;
* the default interaction on all-zero ids (every row from L2: the kernel's own cost without DRAM), on uniform
  ids (every row from DRAM), and without the 351-entry scatter (the probe: one byte per pair);
* the whole batch (front + top MLP on --top-gemm) with the default front, and with the most frugal bottom and
  interaction variants found here.

    python3 benchmarks/bench_front_energy.py [--batch 262144] [--rows-scale 1.0] [--sustain 4] [--out DIR]
Prints a table and writes bench_front_energy.json.
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
from bench_cuda import apply_top_gemm, gpu_bench_model, scattered, skewed_ids, timed, whole_batch_graph  # noqa: E402
from bench_operand_power import LAYOUT, rounds_cell, sustained_rounds  # noqa: E402
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.cutlass_gemm import VARIANTS as CUTLASS_VARIANTS  # noqa: E402
from dlrm_bench.engines.cuda.interaction import Interaction  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import TopMLP  # noqa: E402
from dlrm_bench.quant.recipe import TOP_INPUT_PAD  # noqa: E402

BOTTOM_TILES = [(64, 128, 4, 2), (128, 128, 8, 2), (128, 64, 8, 2), (64, 64, 4, 2), (32, 128, 4, 2)]
"""(rows per program, chunk, warps, stages); the first is the engine's default."""
INTERACTION_TILES = [(4, 4, 1, 1), (8, 4, 1, 1), (16, 8, 1, 1), (4, 4, 8, 3)]
"""(pairs per program, warps, iterations, stages); the first is the engine's default."""
CUDA_PAIRS_PER_WARP = [4, 8, 16]
"""The CUDA interaction kernel's pairs per warp tried."""


def tile_name(kind: str, tile: tuple[int, ...]) -> str:
    return f"{kind} {'/'.join(map(str, tile))}"


def kernel_graphs(qm, tables, offsets, cards, device, n: int) -> tuple[dict, dict, torch.Tensor]:
    """name -> graph of one front kernel on n pairs; name -> the op (for the whole-batch graphs); the top input
    buffer they write."""
    numeric = torch.randint(-20, 127, (n, 13), dtype=torch.int8, device=device)
    ids = {"skewed": scattered(skewed_ids(cards, n, device, 100 + n), cards, 100 + n),
           "zero ids": torch.zeros(n, len(cards), dtype=torch.int32, device=device),
           "uniform ids": torch.stack([torch.randint(0, c, (n,), device=device) for c in cards], 1).to(torch.int32)}
    top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
    graphs, ops = {}, {}
    for tile in BOTTOM_TILES:
        op = BottomMLP(qm, device, *tile)
        ops[tile_name("bottom", tile)] = lambda op=op: op(numeric, None, n, top_in)
    cuda_bottom = BottomMLP(qm, device, kernel="cuda")
    ops["bottom cuda"] = lambda: cuda_bottom(numeric, None, n, top_in)
    for tile in INTERACTION_TILES:
        op = Interaction(qm, tables, offsets, *tile, layout=LAYOUT)
        ops[tile_name("interaction", tile)] = lambda op=op: op(ids["skewed"], None, n, top_in)
    for ppw in CUDA_PAIRS_PER_WARP:
        op = Interaction(qm, tables, offsets, layout=LAYOUT, kernel="cuda", pairs_per_warp=ppw)
        ops[f"interaction cuda/{ppw}"] = lambda op=op: op(ids["skewed"], None, n, top_in)
    cuda = Interaction(qm, tables, offsets, layout=LAYOUT, kernel="cuda")
    ops["interaction cuda, zero ids"] = lambda: cuda(ids["zero ids"], None, n, top_in)
    default = Interaction(qm, tables, offsets, *INTERACTION_TILES[0], layout=LAYOUT)
    for kind in ("zero ids", "uniform ids"):
        ops[f"interaction default, {kind}"] = lambda kind=kind: default(ids[kind], None, n, top_in)
    probe = Interaction(qm, tables, offsets, *INTERACTION_TILES[0], layout=LAYOUT, probe_no_scatter=True)
    ops["interaction default, no scatter (probe)"] = lambda: probe(ids["skewed"], None, n, top_in)
    for name, fn in ops.items():
        graphs[name] = whole_batch_graph(fn)
    return graphs, ops, top_in


def cuda_matches_triton(ops: dict, top_in: torch.Tensor) -> bool:
    """The CUDA interaction's bytes against the Triton kernel's, on the bench's batch (bottom MLP output in
    place, the rest of the buffer filled with random bytes first)."""
    ops[tile_name("bottom", BOTTOM_TILES[0])]()
    top_in[:, 128:] = torch.randint(-128, 128, top_in[:, 128:].shape, dtype=torch.int8, device=top_in.device)
    other = top_in.clone()
    ops[tile_name("interaction", INTERACTION_TILES[0])]()
    want = top_in.clone()
    top_in.copy_(other)
    ops[f"interaction cuda/{CUDA_PAIRS_PER_WARP[0]}"]()
    return bool(torch.equal(top_in, want))


def cuda_bottom_matches_triton(ops: dict, top_in: torch.Tensor) -> bool:
    """The CUDA bottom MLP's bytes against the Triton kernel's, in the whole buffer (filled with random bytes
    first)."""
    top_in.copy_(torch.randint(-128, 128, top_in.shape, dtype=torch.int8, device=top_in.device))
    other = top_in.clone()
    ops[tile_name("bottom", BOTTOM_TILES[0])]()
    want = top_in.clone()
    top_in.copy_(other)
    ops["bottom cuda"]()
    return bool(torch.equal(top_in, want))


def frugal(report: dict, kind: str) -> str:
    """The `kind` variant (bottom / interaction, skewed ids) with the fewest uJ per pair."""
    rows = {name: row for name, row in report.items() if name.startswith(kind + " ") and "," not in name}
    return min(rows, key=lambda name: rows[name]["sustained"][0]["uj_per_pair"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=262144, help="pairs per batch")
    ap.add_argument("--rows-scale", type=float, default=1.0, help="fraction of the full table rows")
    ap.add_argument("--top-gemm", default="128x128_c1x2_pingpong_fma_smemrows_e64x128",
                    choices=["triton", *CUTLASS_VARIANTS],
                    help="the top MLP's kernels in the whole-batch graphs (CUTLASS: hidden and final layers)")
    ap.add_argument("--sustain", type=float, default=4.0, help="seconds of back-to-back replay per config")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    args = ap.parse_args()
    if args.batch < 1 or args.sustain <= 0:
        ap.error("--batch and --sustain must be positive")
    model = gpu_bench_model("bench_front_energy.py", args.rows_scale)
    if model is None:
        return 2
    device, cards, qm, tables, offsets = model
    n = args.batch
    top = TopMLP(qm, device, interaction_layout=LAYOUT)
    if not apply_top_gemm(top, args.top_gemm, True, "bench_front_energy.py"):
        return 2
    graphs, ops, top_in = kernel_graphs(qm, tables, offsets, cards, device, n)
    report: dict = {"device": torch.cuda.get_device_name(), "pairs": n, "rows_scale": args.rows_scale,
                    "top_gemm": args.top_gemm, "cuda_bottom_equals_triton": cuda_bottom_matches_triton(ops, top_in),
                    "cuda_interaction_equals_triton": cuda_matches_triton(ops, top_in), "configs": {}}
    print("CUDA bottom MLP / interaction bytes equal to Triton's:", report["cuda_bottom_equals_triton"],
          report["cuda_interaction_equals_triton"], flush=True)
    for name, rounds in sustained_rounds(graphs, n, args.sustain, 1).items():
        report["configs"][name] = {"graph_ms": timed(graphs[name].replay), "sustained": rounds}
        print(name, json.dumps(report["configs"][name]), flush=True)
    hidden = [torch.empty(n, w, dtype=torch.int8, device=device) for w in top.widths]
    probs = torch.empty(n, device=device)
    best = (frugal(report["configs"], "bottom"), frugal(report["configs"], "interaction"))
    wholes = {"whole batch, default front": (tile_name("bottom", BOTTOM_TILES[0]),
                                             tile_name("interaction", INTERACTION_TILES[0])),
              "whole batch, CUDA interaction (the engine's interaction_kernel cuda)": (
                  tile_name("bottom", BOTTOM_TILES[0]), "interaction cuda/8"),
              "whole batch, CUDA bottom + CUDA interaction (bottom_kernel cuda)": ("bottom cuda",
                                                                                   "interaction cuda/8"),
              f"whole batch, {best[0]} + {best[1]}": best}
    whole_graphs = {name: whole_batch_graph(lambda b=b, i=i: (ops[b](), ops[i](), top(top_in, hidden, probs, n)))
                    for name, (b, i) in wholes.items()}
    for name, rounds in sustained_rounds(whole_graphs, n, args.sustain, 2).items():
        report["configs"][name] = {"graph_ms": timed(whole_graphs[name].replay), "sustained": rounds}
    write_report(args.out, "bench_front_energy.json", report)
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    print(f"\n{report['device']}, {report['pairs']} pairs, tables at {report['rows_scale']} of the full rows, top "
          f"{report['top_gemm']}; CUDA bottom MLP / interaction = Triton's bytes: "
          f"{report['cuda_bottom_equals_triton']} / {report['cuda_interaction_equals_triton']}")
    print(f"{'config':<52} {'graph ms':>9}  sustained: ms, MHz, W, uJ/pair")
    for name, row in report["configs"].items():
        print(f"{name:<52} {row['graph_ms']:9.3f}  {rounds_cell(row['sustained'])}")


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
