#!/usr/bin/env python3
"""Does the top MLP's energy per pair depend on the values it multiplies? Same kernels, same weights, different
top inputs, at the card's power limit.

A GPU at its power limit trades clock for watts, and a tensor core's energy per operation depends on how many
operand bits switch. The criteo-tb-random preset's tables are uniform int8 (every bit random), a trained model's
are not. This times the top MLP (the four layers as one CUDA graph, replayed back to back for --sustain seconds,
SM clock and power read each second) on:

* real: the top input that the bottom MLP and the interaction make from the bench model (bench_cuda.build);
* quarter: the same values divided by 4 (smaller magnitudes, the same signs and zeros);
* sparse: the real input with three of every four columns set to zero;
* zeros: all zero (only the biases propagate).

    python3 benchmarks/bench_operand_power.py [--batch 262144] [--sustain 6] [--rounds 2] [--out DIR]
Prints a table and writes bench_operand_power.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_inputs import write_report  # noqa: E402
from bench_cuda import gpu_bench_model, skewed_ids, sustained, timed, whole_batch_graph  # noqa: E402
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.interaction import Interaction  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import TopMLP  # noqa: E402
from dlrm_bench.quant.recipe import TOP_INPUT_PAD  # noqa: E402

LAYOUT = "paired"
"""The interaction layout the engine uses (its default)."""


def real_top_input(qm, tables, offsets, cards, device, n: int) -> torch.Tensor:
    """int8 [n, 512]: the bottom MLP and the interaction on random numeric inputs and skewed ids."""
    numeric = torch.randint(-20, 127, (n, 13), dtype=torch.int8, device=device)
    cat = skewed_ids(cards, n, device, 100 + n)
    top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
    BottomMLP(qm, device)(numeric, None, n, top_in)
    Interaction(qm, tables, offsets, layout=LAYOUT)(cat, None, n, top_in)
    torch.cuda.synchronize()
    return top_in


def input_variants(real: torch.Tensor) -> dict[str, torch.Tensor]:
    """The top inputs compared (module docstring), all int8 [n, 512]."""
    sparse = real.clone()
    sparse[:, torch.arange(TOP_INPUT_PAD, device=real.device) % 4 != 0] = 0
    return {"real": real, "quarter": torch.div(real, 4, rounding_mode="trunc"), "sparse": sparse,
            "zeros": torch.zeros_like(real)}


def operand_stats(x: torch.Tensor) -> dict:
    """Share of zero bytes and mean |value| of an int8 tensor."""
    return {"zero_fraction": float((x == 0).float().mean()), "mean_abs": float(x.float().abs().mean())}


def summarize(windows: list[dict], skip: int = 2) -> dict:
    """Medians over the sustained windows after the first `skip` (the clock settles); uJ per pair = W / (M pairs/s)."""
    kept = windows[skip:] or windows
    med = {key: float(np.median([w.get(key, 0.0) for w in kept]))
           for key in ("ms_per_batch", "m_pairs_per_second", "sm_mhz", "power_w")}
    med["uj_per_pair"] = med["power_w"] / med["m_pairs_per_second"]
    return med


def sustained_rounds(graphs: dict, n: int, seconds: float, rounds: int) -> dict[str, list[dict]]:
    """Each graph replayed back to back for `seconds`, in turn, `rounds` times over (so that every config sees
    the card warm and cool alike): per graph name, one `summarize` per round."""
    out: dict[str, list[dict]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, graph in graphs.items():
            out[name].append(summarize(sustained(graph.replay, n, seconds)))
    return out


def rounds_cell(rounds: list[dict]) -> str:
    """Table cell of sustained rounds: ms per batch, SM MHz, W, uJ per pair; rounds separated by ';'."""
    return "; ".join(f"{s['ms_per_batch']:.3f} {s['sm_mhz']:.0f} {s['power_w']:.0f} {s['uj_per_pair']:.2f}"
                     for s in rounds)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=262144, help="pairs per batch")
    ap.add_argument("--rows-scale", type=float, default=0.02,
                    help="fraction of the full table rows (the top MLP does not depend on it)")
    ap.add_argument("--sustain", type=float, default=6.0, help="seconds of back-to-back replay per input and round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over the inputs")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    args = ap.parse_args()
    if args.batch < 1 or args.rounds < 1 or args.sustain <= 0:
        ap.error("--batch, --rounds and --sustain must be positive")
    model = gpu_bench_model("bench_operand_power.py", args.rows_scale)
    if model is None:
        return 2
    device, cards, qm, tables, offsets = model
    n = args.batch
    top = TopMLP(qm, device, interaction_layout=LAYOUT)
    buffers = [torch.empty(n, w, dtype=torch.int8, device=device) for w in top.widths]
    probs = torch.empty(n, device=device)
    inputs = input_variants(real_top_input(qm, tables, offsets, cards, device, n))
    report: dict = {"device": torch.cuda.get_device_name(), "pairs": n, "inputs": {}}
    graphs = {}
    for name, x in inputs.items():
        graphs[name] = whole_batch_graph(lambda x=x: top(x, buffers, probs, n))
        graphs[name].replay()
        torch.cuda.synchronize()
        report["inputs"][name] = {"top_input": operand_stats(x), "hidden_1": operand_stats(buffers[0]),
                                  "graph_ms": timed(graphs[name].replay)}
    for name, rounds in sustained_rounds(graphs, n, args.sustain, args.rounds).items():
        report["inputs"][name]["sustained"] = rounds
    write_report(args.out, "bench_operand_power.json", report)
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    print(f"\n{report['device']}, top MLP on {report['pairs']} pairs, the same weights, different inputs")
    print(f"{'input':<8} {'zeros in/h1':>12} {'|x| in/h1':>11} {'short ms':>9}  "
          "sustained per round: ms, MHz, W, uJ/pair")
    for name, row in report["inputs"].items():
        stats = f"{row['top_input']['zero_fraction']:.2f}/{row['hidden_1']['zero_fraction']:.2f}"
        mags = f"{row['top_input']['mean_abs']:.1f}/{row['hidden_1']['mean_abs']:.1f}"
        print(f"{name:<8} {stats:>12} {mags:>11} {row['graph_ms']:9.3f}  {rounds_cell(row['sustained'])}")


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
