#!/usr/bin/env python3
"""One batch's kernels, launched one by one (no CUDA graph) inside a profiler range, for Nsight Compute.

Builds the bench model (bench_cuda.build), warms every kernel up, then runs one batch per --top-gemm variant
between cudaProfilerStart and cudaProfilerStop: the bottom MLP (Triton and CUDA kernels), the CUDA gather +
interaction, and the top MLP's hidden layers and final layer on that variant. Run it under ncu with `--profile-from-start off` so that only those
kernels are profiled, e.g.

    ncu --clock-control none --profile-from-start off --section SpeedOfLight --section WarpStateStats \\
        python3 benchmarks/profile_batch.py --top-gemm 128x128_c1x2_pingpong_fma

Alone (no profiler) it prints each launch's time from CUDA events, so it is also a quick per-kernel timing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from bench_cuda import apply_top_gemm, gpu_bench_model, random_numeric, scattered, skewed_ids  # noqa: E402
from bench_operand_power import LAYOUT  # noqa: E402
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.cutlass_gemm import VARIANTS as CUTLASS_VARIANTS  # noqa: E402
from dlrm_bench.engines.cuda.interaction import Interaction  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import TopMLP  # noqa: E402
from dlrm_bench.quant.recipe import TOP_INPUT_PAD, quantize_numeric  # noqa: E402


def event_ms(fn) -> float:
    """fn() once, timed with CUDA events (ms)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=262144, help="pairs per batch")
    ap.add_argument("--rows-scale", type=float, default=1.0, help="fraction of the full table rows")
    ap.add_argument("--top-gemm", default="128x128_c1x2_pingpong_fma",
                    help=f"comma-separated CUTLASS variants, one profiled batch each: {', '.join(CUTLASS_VARIANTS)}")
    args = ap.parse_args()
    variants = [v for v in args.top_gemm.split(",") if v]
    unknown = [v for v in variants if v not in CUTLASS_VARIANTS]
    if args.batch < 1 or not variants or unknown:
        ap.error(f"--batch must be positive and --top-gemm name known variants (unknown: {unknown or 'none'})")
    model = gpu_bench_model("profile_batch.py", args.rows_scale)
    if model is None:
        return 2
    device, cards, qm, tables, offsets = model
    n = args.batch
    numeric = quantize_numeric(random_numeric(n, device, 7).cpu()).to(device)
    ids = scattered(skewed_ids(cards, n, device, 8), cards, 8)
    top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
    bottom = BottomMLP(qm, device)
    cuda_bottom = BottomMLP(qm, device, kernel="cuda")
    interaction = Interaction(qm, tables, offsets, layout=LAYOUT, kernel="cuda")
    tops = {}
    for variant in variants:
        tops[variant] = TopMLP(qm, device, interaction_layout=LAYOUT)
        if not apply_top_gemm(tops[variant], variant, True, "profile_batch.py"):
            return 2
    hidden = [torch.empty(n, w, dtype=torch.int8, device=device) for w in tops[variants[0]].widths]
    probs = torch.empty(n, device=device)
    steps = {"bottom MLP (triton)": lambda: bottom(numeric, None, n, top_in),
             "bottom MLP (cuda)": lambda: cuda_bottom(numeric, None, n, top_in),
             "gather + interaction (cuda)": lambda: interaction(ids, None, n, top_in)}
    for variant, top in tops.items():
        steps[f"top MLP ({variant})"] = lambda top=top: top(top_in, hidden, probs, n)
    for _ in range(3):
        for step in steps.values():
            step()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    times = {name: event_ms(step) for name, step in steps.items()}
    torch.cuda.profiler.stop()
    for name, ms in times.items():
        print(f"{name:<48} {ms:8.3f} ms (one launch, events)")
    return 0


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
