#!/usr/bin/env python3
"""The top MLP in int8 against fp8 (e4m3) on one GPU: same model, same activations, same kernels and tiles.

One batch of real top inputs (the bottom MLP and the interaction run on skewed ids, as bench_cuda.py builds them)
goes through both formats. Each layer is timed short; the four layers as one CUDA graph are timed short and then
replayed back to back for --sustain seconds per format, alternating int8, fp8, int8, fp8, with the SM clock and
the power read each second: at the card's power limit the format that costs less energy per pair runs faster.
The fp8 kernels are checked first against their fp32 emulation (quant/fp8.py), and both formats' probabilities
are compared on the batch.

    python3 benchmarks/bench_top_precision.py [--batch 262144] [--sustain 6] [--rounds 2] [--out DIR]
Prints a table and writes bench_top_precision.json.
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

from bench_cuda import build, layer_costs, skewed_ids, sustained, timed, whole_batch_graph  # noqa: E402
from dlrm_bench.criteo.schema import CRITEO_TB_CARDINALITIES  # noqa: E402
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.interaction import Interaction  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import PRECISIONS, TopMLP  # noqa: E402
from dlrm_bench.quant.fp8 import emulate_top_fp8, fp8_top, to_e4m3  # noqa: E402
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


def fp8_check(qm, device, n: int = 4096) -> dict:
    """The fp8 kernels against quant/fp8.py's emulation on random int8-valued inputs (recipe layout)."""
    g = torch.Generator().manual_seed(5)
    x = to_e4m3(torch.randint(-40, 40, (n, TOP_INPUT_PAD), generator=g).float())
    x[:, 479:] = 0
    top = TopMLP(qm, device, precision="fp8")
    buffers = [torch.empty(n, w, dtype=top.dtype, device=device) for w in top.widths]
    probs = torch.empty(n, device=device)
    top(x.to(device), buffers, probs, n)
    diff = (probs.cpu() - emulate_top_fp8(fp8_top(qm), x)).abs()
    return {"pairs": n, "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}


class TopRun:
    """One format's top MLP on the batch: its input, buffers, probabilities and CUDA graph."""

    def __init__(self, qm, device, precision: str, top_in: torch.Tensor) -> None:
        self.n = top_in.shape[0]
        self.top = TopMLP(qm, device, interaction_layout=LAYOUT, precision=precision)
        self.x = top_in if precision == "int8" else to_e4m3(top_in.float())
        self.buffers = [torch.empty(self.n, w, dtype=self.top.dtype, device=device) for w in self.top.widths]
        self.probs = torch.empty(self.n, device=device)
        self.graph = whole_batch_graph(lambda: self.top(self.x, self.buffers, self.probs, self.n))

    def layer_ms(self) -> dict[str, dict]:
        inputs, outs = [self.x, *self.buffers], [*self.buffers, self.probs]
        costs = layer_costs()
        rows = {}
        for i in range(4):
            ms = timed(lambda i=i: self.top.layer(i, inputs[i], outs[i], self.n))
            rows[f"top_{i}"] = {"ms": ms, "tops": costs[f"top_{i}"][0] * self.n / (ms / 1e3) / 1e12}
        return rows


def summarize(windows: list[dict], skip: int = 2) -> dict:
    """Medians over the sustained windows after the first `skip` (the clock settles)."""
    kept = windows[skip:] or windows
    med = {key: float(np.median([w.get(key, 0.0) for w in kept]))
           for key in ("ms_per_batch", "m_pairs_per_second", "sm_mhz", "power_w")}
    med["uj_per_pair"] = med["power_w"] / med["m_pairs_per_second"]  # W / (M pairs/s) = uJ per pair
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=262144, help="pairs per batch")
    ap.add_argument("--rows-scale", type=float, default=0.02, help="fraction of the full table rows (the top "
                                                                   "MLP does not depend on it)")
    ap.add_argument("--sustain", type=float, default=6.0, help="seconds of back-to-back replay per format and round")
    ap.add_argument("--rounds", type=int, default=2, help="int8, fp8 rounds of sustained replay")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    args = ap.parse_args()
    if args.batch < 1 or args.rounds < 1 or args.sustain < 0:
        ap.error("--batch and --rounds must be positive and --sustain at least 0")
    if not torch.cuda.is_available():
        print("bench_top_precision.py: error: needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    cards = [max(1, int(c * args.rows_scale)) for c in CRITEO_TB_CARDINALITIES]
    qm, tables, offsets = build(cards, device)
    report: dict = {"device": torch.cuda.get_device_name(), "pairs": args.batch, "fp8_check": fp8_check(qm, device)}
    print(json.dumps(report["fp8_check"]), flush=True)
    top_in = real_top_input(qm, tables, offsets, cards, device, args.batch)
    runs = {p: TopRun(qm, device, p, top_in) for p in PRECISIONS}
    for run in runs.values():
        run.graph.replay()
    torch.cuda.synchronize()
    diff = (runs["fp8"].probs - runs["int8"].probs).abs()
    report["fp8_vs_int8_probs"] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())}
    for p, run in runs.items():
        report[p] = {"layers": run.layer_ms(), "graph_ms": timed(run.graph.replay), "sustained": []}
    for _ in range(args.rounds):
        for p, run in runs.items():
            if args.sustain > 0:
                report[p]["sustained"].append(summarize(sustained(run.graph.replay, args.batch, args.sustain)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_top_precision.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    print(f"\n{report['device']}, top MLP on {report['pairs']} pairs")
    print(f"fp8 kernels vs emulation: {report['fp8_check']}; fp8 vs int8 probabilities: {report['fp8_vs_int8_probs']}")
    print(f"{'':<6} " + " ".join(f"{name:>16}" for name in report["int8"]["layers"]) + f" {'graph ms':>9}")
    for p in PRECISIONS:
        cells = " ".join(f"{s['ms']:7.3f} {s['tops']:5.0f}TOPS" for s in report[p]["layers"].values())
        print(f"{p:<6} {cells} {report[p]['graph_ms']:9.3f}")
    for p in PRECISIONS:
        for r, s in enumerate(report[p]["sustained"]):
            print(f"sustained {p} round {r + 1}: {s['ms_per_batch']:.3f} ms/batch, {s['m_pairs_per_second']:.1f} M "
                  f"pairs/s, SM {s['sm_mhz']:.0f} MHz, {s['power_w']:.0f} W, {s['uj_per_pair']:.2f} uJ/pair")


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
