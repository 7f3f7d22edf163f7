#!/usr/bin/env python3
"""The CUDA engine's kernels at full scale: each stage against its roofline, end-to-end pairs/s per batch size, the
batch as one CUDA graph (optionally replayed back to back at the power limit), and PyTorch baselines measured in
the same run.

The model is the criteo-tb-random shape (187,767,399 rows x 128 int8 = 24 GB on the GPU) with random weights,
generated on the device; ids follow a skewed (power-law) distribution per table with the hot rows at the start of
each table ("interaction"), and the same ids spread over the table by a bijection ("inter_spread", as the
criteo-tb-random preset and the real data place hot rows). Correctness is checked first: the kernels'
probabilities against the int8 recipe's emulation on a few thousand pairs. The kernels are the engine's for the
given settings: `--system` takes this machine's Offline settings from configs/ (the native kernels on an H100),
`--set KEY=VALUE` changes one (bottom_kernel, interaction_kernel, interaction_pairs_per_warp, top_gemm,
top_gemm_first_layer, cutlass_final_layer).

`--compare KEY=VALUE[,KEY=VALUE...]` (repeatable) measures kernel variants against those settings instead: each
variant's correctness, its top layers' times, and its whole batch replayed back to back at the power limit, in
`--rounds` interleaved rounds of `--sustain` seconds (baseline, variant 1, ..., baseline, ...), as the medians over
rounds of pairs/s and energy per pair, and their ratios to the baseline's.

    python3 benchmarks/bench_cuda.py [--system] [--set top_gemm=...] [--batches 65536,262144] [--sustain 20]
                                     [--rows-scale 1.0] [--out DIR]
    python3 benchmarks/bench_cuda.py --system --compare top_gemm=... [--compare ...] [--batches 1048576]
                                     [--sustain 8] [--rounds 3]
Prints a table and writes bench_cuda.json (bench_cuda_compare.json with --compare).
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

from dlrm_bench import configs  # noqa: E402
from dlrm_bench.criteo.schema import BOTTOM_MLP, CRITEO_TB_CARDINALITIES, NUM_DENSE, TOP_MLP, TOP_MLP_INPUT  # noqa: E402
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.interaction import Interaction, paired_columns, to_paired_layout  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import TopMLP, use_cutlass_hidden_layers  # noqa: E402
from dlrm_bench.errors import UserError  # noqa: E402
from dlrm_bench.quant.calibration import batch_ranges  # noqa: E402
from dlrm_bench.quant.recipe import (TOP_INPUT_PAD, build_quantized, emulate_bottom, emulate_interaction,  # noqa: E402
                                     emulate_top, quantize_numeric)
from dlrm_bench.random_preset import access_laws  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402
from dlrm_bench.system import detect_system  # noqa: E402

PEAK_INT8_TOPS = 1979.0
"""H100/H200 SXM dense int8 tensor-core rate (datasheet)."""
KERNEL_SETTINGS = ("bottom_kernel", "interaction_kernel", "interaction_pairs_per_warp", "top_gemm",
                   "top_gemm_first_layer", "cutlass_final_layer")


def random_mlp(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for prefix, sizes in (("bot_l", [NUM_DENSE, *BOTTOM_MLP]), ("top_l", [TOP_MLP_INPUT, *TOP_MLP])):
        for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
            sd[f"{prefix}.{2 * i}.weight"] = torch.randn(n, k, generator=g) * (2.0 / (k + n)) ** 0.5
            sd[f"{prefix}.{2 * i}.bias"] = torch.randn(n, generator=g) * (1.0 / n) ** 0.5
    return sd


def random_tables(cards: list[int], device: torch.device, seed: int) -> torch.Tensor:
    total = sum(cards)
    tables = torch.empty(total, 128, dtype=torch.int8, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    step = 1 << 24
    for lo in range(0, total, step):
        hi = min(total, lo + step)
        tables[lo:hi] = torch.randint(-127, 128, (hi - lo, 128), generator=g, device=device, dtype=torch.int8)
    return tables


def skewed_ids(cards: list[int], n: int, device: torch.device, seed: int, power: float = 3.0) -> torch.Tensor:
    """int32 [n, 26]: id = floor(card * u^power), u uniform: hot low ids, a long tail."""
    g = torch.Generator(device=device).manual_seed(seed)
    cols = [(torch.rand(n, generator=g, device=device) ** power * c).long().clamp_(max=c - 1) for c in cards]
    return torch.stack(cols, 1).to(torch.int32)


def scattered(ids: torch.Tensor, cards: list[int], seed: int) -> torch.Tensor:
    """int32 [n, 26]: each table's ids moved by the criteo-tb-random preset's per-table bijection
    id -> (m * id + s) mod card (random_preset.AccessLaw.rank_to_row), so the hot rows (low ids of skewed_ids)
    are spread over the whole table, as the preset and the real data place them, instead of sitting together at
    its start."""
    laws = access_laws(cards, 2.0, seed)  # only the bijections are used, not the exponent
    cols = [law.rank_to_row(ids[:, t].long()) for t, law in enumerate(laws)]
    return torch.stack(cols, 1).to(torch.int32)


def random_numeric(n: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    counts = torch.floor(torch.exp(torch.rand(n, NUM_DENSE, generator=g, device=device) * 8)) - 1
    return torch.log1p(counts.clamp(min=0))


def timed(fn, iters: int = 20) -> float:
    """Median milliseconds of fn() over `iters` runs, with CUDA events, after two warm-ups."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def copy_bandwidth(device: torch.device) -> float:
    """GB/s of a 4 GiB device-to-device copy, counting bytes read plus written."""
    src = torch.empty(1 << 32, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), 5)
    del src, dst
    return 2 * (1 << 32) / (ms / 1e3) / 1e9


def build(cards: list[int], device: torch.device):
    tables = random_tables(cards, device, seed=1)
    offsets = torch.tensor(np.concatenate(([0], np.cumsum(cards)[:-1])), dtype=torch.int64)
    scales = torch.empty(len(cards)).uniform_(0.002, 0.02)
    sd = random_mlp(2)
    calib_n = 8192
    numeric = random_numeric(calib_n, device, 3)
    cat = skewed_ids(cards, calib_n, device, 4)
    off_dev = offsets.to(device)

    def lookup(t: int, ids: np.ndarray) -> torch.Tensor:
        rows = tables[off_dev[t] + torch.from_numpy(ids.astype(np.int64)).to(device)]
        return rows.float().cpu() * float(scales[t])

    num_q = quantize_numeric(numeric.cpu()).float() * (14.2313 / 127)
    ranges = batch_ranges(sd, lookup, num_q.numpy(), cat.cpu().numpy())
    qm = build_quantized(sd, scales, ranges)
    return qm, tables, offsets


class Kernels:
    """The engine's three stages for `settings` (KERNEL_SETTINGS), as CudaEngine builds them."""

    def __init__(self, qm, tables: torch.Tensor, offsets: torch.Tensor, device: torch.device,
                 settings: Settings) -> None:
        self.bottom = BottomMLP(qm, device, kernel=settings.bottom_kernel)
        self.inter = Interaction(qm, tables, offsets, kernel=settings.interaction_kernel,
                                 pairs_per_warp=settings.interaction_pairs_per_warp)
        self.top = TopMLP(qm, device)
        if settings.top_gemm != "triton":
            use_cutlass_hidden_layers(self.top, settings.top_gemm, final_layer=settings.cutlass_final_layer,
                                      first_layer=settings.top_gemm_first_layer)


def check_correctness(qm, tables, offsets, cards, device, settings: Settings, n: int = 4096) -> dict:
    """The stages' top-MLP input and probabilities against the recipe's emulation on n pairs."""
    numeric_q = quantize_numeric(random_numeric(n, device, 11).cpu())
    cat = skewed_ids(cards, n, device, 12)
    rows_cpu = tables[(cat.long() + offsets.to(device)[None, :])].cpu()
    recipe_top_in = emulate_interaction(qm, emulate_bottom(qm, numeric_q), rows_cpu)
    want = emulate_top(qm, recipe_top_in)
    k = Kernels(qm, tables, offsets, device, settings)
    top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
    k.bottom(numeric_q.to(device), None, n, top_in)
    k.inter(cat, None, n, top_in)
    buffers = [torch.empty(n, w, dtype=torch.int8, device=device) for w in k.top.widths]
    probs = torch.full((n,), float("nan"), device=device)
    k.top(top_in, buffers, probs, n)
    used = torch.cat([torch.arange(128), paired_columns()])  # the paired layout's spare columns vary
    diff = (top_in.cpu()[:, used].to(torch.int16) - to_paired_layout(recipe_top_in)[:, used].to(torch.int16)).abs()
    pdiff = (probs.cpu() - want).abs()
    return {"pairs": n, "top_input_max_step_diff": int(diff.max()),
            "top_input_mismatch_fraction": float((diff > 0).float().mean()),
            "prob_max_abs_diff": float(pdiff.max()), "prob_mean_abs_diff": float(pdiff.mean()),
            "nan": bool(torch.isnan(probs).any())}


def layer_costs() -> dict[str, tuple[float, float]]:
    """(operations, bytes) per pair of each stage (bytes: each input read once, each output written once)."""
    top_shapes = [(512, 1024), (1024, 1024), (1024, 512), (512, 256)]
    costs = {"bottom_mlp": (2 * (13 * 512 + 512 * 256 + 256 * 128), 13 + 128),
             "interaction": (2 * 27 * 27 * 128 / 2, 26 * 128 + 26 * 4 + 128 + 351)}
    for i, (k, n) in enumerate(top_shapes):
        costs[f"top_{i}"] = (2 * k * n + (2 * n if i == 3 else 0), k + (n if i < 3 else 4))
    return costs


def bench_batch(qm, tables, offsets, cards, device, n: int, peak_bw: float, settings: Settings,
                sustain_seconds: float = 0.0) -> dict:
    """Each stage, the whole batch launched kernel by kernel and as one CUDA graph, at n pairs."""
    numeric = torch.randint(-20, 127, (n, 13), dtype=torch.int8, device=device)
    cat = skewed_ids(cards, n, device, 100 + n)
    k = Kernels(qm, tables, offsets, device, settings)
    top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
    buffers = [torch.empty(n, w, dtype=torch.int8, device=device) for w in k.top.widths]
    probs = torch.empty(n, device=device)
    cat_scattered = scattered(cat, cards, 100 + n)
    stages = {"bottom_mlp": lambda: k.bottom(numeric, None, n, top_in),
              "interaction": lambda: k.inter(cat, None, n, top_in),
              "inter_spread": lambda: k.inter(cat_scattered, None, n, top_in)}
    inputs, outs = [top_in, *buffers], [*buffers, probs]
    for i in range(4):
        stages[f"top_{i}"] = (lambda i=i: k.top.layer(i, inputs[i], outs[i], n))
    costs = layer_costs()
    costs["inter_spread"] = costs["interaction"]
    result: dict = {"pairs": n, "stages": {}}
    for name, fn in stages.items():
        ms = timed(fn)
        ops, nbytes = costs[name]
        result["stages"][name] = {
            "ms": ms, "tops": ops * n / (ms / 1e3) / 1e12, "gbps": nbytes * n / (ms / 1e3) / 1e9,
            "roofline_ms": max(ops * n / (PEAK_INT8_TOPS * 1e12), nbytes * n / (peak_bw * 1e9)) * 1e3}

    def whole() -> None:
        k.bottom(numeric, None, n, top_in)
        k.inter(cat, None, n, top_in)
        k.top(top_in, buffers, probs, n)

    result["end_to_end_ms"] = timed(whole)
    result["pairs_per_second"] = n / (result["end_to_end_ms"] / 1e3)
    result["samples_per_second_at_270"] = result["pairs_per_second"] / 270.0
    graph = whole_batch_graph(whole)
    result["graph_ms"] = timed(graph.replay)
    result["graph_pairs_per_second"] = n / (result["graph_ms"] / 1e3)
    if sustain_seconds > 0:
        result["sustained"] = sustained(graph.replay, n, sustain_seconds)
    result["torch_int_mm_top_ms"] = timed(lambda: torch_int_mm_top(qm, top_in, device))
    return result


def gpu_clocks() -> dict:
    """SM clock (MHz), power draw (W) and temperature (C) from nvidia-smi; {} where it is missing."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu",
                              "--format=csv,noheader,nounits", "-i", str(torch.cuda.current_device())],
                             capture_output=True, text=True, timeout=10).stdout.split(",")
        return {"sm_mhz": float(out[0]), "power_w": float(out[1]), "temp_c": float(out[2])}
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return {}


def sustained(replay, n: int, seconds: float, window: float = 1.0) -> list[dict]:
    """Replay one batch back to back for `seconds`, as a long LoadGen run keeps the GPU busy: per window of about
    `window` s, ms per batch and M pairs/s, with the SM clock and power read while it runs (a GPU at its power
    limit lowers its clock after a while; a short timing does not see that)."""
    rows: list[dict] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        count, t0, clocks = 0, time.perf_counter(), None
        start.record()
        while time.perf_counter() - t0 < window:
            for _ in range(50):
                replay()
            count += 50
            if clocks is None:
                clocks = gpu_clocks()  # read while the 50 replays run
            torch.cuda.synchronize()
        stop.record()
        stop.synchronize()
        ms = start.elapsed_time(stop) / count
        rows.append({"ms_per_batch": ms, "m_pairs_per_second": n / ms / 1e3, **(clocks or {})})
    return rows


def whole_batch_graph(whole) -> "torch.cuda.CUDAGraph":
    """`whole` (one batch's kernels) recorded as one CUDA graph, as the engine replays a batch (its
    `cuda_graphs` setting): no launch gaps between the kernels."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        whole()  # compiled and warm before the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        whole()
    return graph


_INT_MM_WEIGHTS: dict = {}


def torch_int_mm_top(qm, top_in: torch.Tensor, device: torch.device) -> None:
    """Baseline: the four top GEMMs as torch._int_mm (cuBLAS int8) with unfused torch epilogues."""
    if not _INT_MM_WEIGHTS:
        _INT_MM_WEIGHTS["w"] = [layer.weight.T.contiguous().to(device) for layer in qm.top]
        _INT_MM_WEIGHTS["s"] = [layer.w_scale.to(device) for layer in qm.top]
        _INT_MM_WEIGHTS["b"] = [layer.bias.to(device) for layer in qm.top]
        _INT_MM_WEIGHTS["a"] = [layer.act_inv.to(device) for layer in qm.top[:-1]]
    x = top_in
    w, s, b, a = (_INT_MM_WEIGHTS[k] for k in "wsba")
    for i in range(4):
        y = torch.relu(torch._int_mm(x, w[i]).float() * s[i] + b[i])
        if i < 3:
            x = torch.clamp(torch.round(y * a[i]), -127, 127).to(torch.int8)
    torch.sigmoid(y @ qm.final_weight.to(device) + qm.final_bias)


def torch_fp16_baseline(cards: list[int], device: torch.device, n: int, tables: torch.Tensor,
                        offsets: torch.Tensor) -> float:
    """Pairs/s of a plain PyTorch eager fp16 forward (gather, bmm interaction, fp16 GEMMs), same shapes."""
    sd = {k: v.half().to(device) for k, v in random_mlp(5).items()}
    numeric = torch.rand(n, 13, device=device, dtype=torch.float16)
    cat = skewed_ids(cards, n, device, 7).long() + offsets.to(device)[None, :]
    r, c = torch.tril_indices(27, 27, offset=-1, device=device)

    def forward() -> torch.Tensor:
        x = numeric
        for i in range(3):
            x = torch.relu(torch.nn.functional.linear(x, sd[f"bot_l.{2 * i}.weight"], sd[f"bot_l.{2 * i}.bias"]))
        emb = tables[cat].half()
        vec = torch.cat([x[:, None], emb], 1)
        h = torch.cat([x, torch.bmm(vec, vec.transpose(1, 2))[:, r, c]], 1)
        for i in range(5):
            h = torch.nn.functional.linear(h, sd[f"top_l.{2 * i}.weight"], sd[f"top_l.{2 * i}.bias"])
            h = torch.relu(h) if i < 4 else torch.sigmoid(h)
        return h

    ms = timed(forward, 10)
    return n / (ms / 1e3)


def int_list(text: str) -> list[int]:
    """argparse type: "1,2,3" -> [1, 2, 3] (empty: []); each a positive integer."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def kernel_overrides(items: list[str], flag: str) -> dict:
    """KEY=VALUE items as settings values; only KERNEL_SETTINGS may be given (the rest are not the kernels')."""
    overrides = configs.parse_overrides(items, flag)
    others = sorted(set(overrides) - set(KERNEL_SETTINGS))
    if others:
        raise argparse.ArgumentTypeError(f"{flag} {', '.join(others)}: this benchmark takes only "
                                         f"{', '.join(KERNEL_SETTINGS)}")
    return overrides


def bench_settings(use_system: bool, items: list[str]) -> Settings:
    """This machine's Offline settings (with use_system) or the defaults, with the --set values applied."""
    base = configs.resolve("Offline", "default", "cuda", detect_system()).settings if use_system else Settings()
    return base.with_values(kernel_overrides(items, "--set"), "--set")


def compare_variants(qm, tables, offsets, cards, device, n: int, base: Settings, variants: list[Settings],
                     labels: list[str], rounds: int, seconds: float) -> dict:
    """The baseline `base` and each of `variants` (labels: their --compare text) on one n-pair batch: correctness,
    the four top layers' median ms, then `rounds` interleaved rounds of `seconds` of sustained graph replay each.
    Returns {"pairs", "sets": [{label, settings, correctness, top_ms, rounds, m_pairs_per_second, uj_per_pair,
    ratio_rate, ratio_energy}]} with medians over rounds (a round's value: the median of its 1 s windows after the
    first)."""
    numeric = torch.randint(-20, 127, (n, 13), dtype=torch.int8, device=device)
    cat = skewed_ids(cards, n, device, 100 + n)
    top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
    buffers = [torch.empty(n, w, dtype=torch.int8, device=device) for w in TopMLP(qm, device).widths]
    probs = torch.empty(n, device=device)
    sets: list[dict] = []
    for label, settings in zip(["baseline", *labels], [base, *variants]):
        correctness = check_correctness(qm, tables, offsets, cards, device, settings)
        k = Kernels(qm, tables, offsets, device, settings)
        inputs, outs = [top_in, *buffers], [*buffers, probs]
        top_ms = [timed(lambda i=i: k.top.layer(i, inputs[i], outs[i], n)) for i in range(4)]

        def whole(k=k) -> None:
            k.bottom(numeric, None, n, top_in)
            k.inter(cat, None, n, top_in)
            k.top(top_in, buffers, probs, n)

        sets.append({"label": label, "settings": {key: getattr(settings, key) for key in KERNEL_SETTINGS},
                     "correctness": correctness, "top_ms": top_ms, "graph": whole_batch_graph(whole), "rounds": []})
        print(f"{label}: correctness {json.dumps(correctness)}; top layers "
              f"{' / '.join(f'{ms:.3f}' for ms in top_ms)} ms", flush=True)
    for r in range(rounds):
        for entry in sets:
            rows = sustained(entry["graph"].replay, n, seconds)
            kept = rows[1:] or rows
            rate = float(np.median([row["m_pairs_per_second"] for row in kept]))
            watts = float(np.median([row.get("power_w", float("nan")) for row in kept]))
            mhz = float(np.median([row.get("sm_mhz", float("nan")) for row in kept]))
            entry["rounds"].append({"m_pairs_per_second": rate, "power_w": watts, "sm_mhz": mhz,
                                    "uj_per_pair": watts / rate})
            print(f"round {r + 1} {entry['label']}: {rate:.2f} M pairs/s, {watts:.0f} W, {mhz:.0f} MHz, "
                  f"{watts / rate:.3f} uJ per pair", flush=True)
    for entry in sets:
        del entry["graph"]
        entry["m_pairs_per_second"] = float(np.median([x["m_pairs_per_second"] for x in entry["rounds"]]))
        entry["uj_per_pair"] = float(np.median([x["uj_per_pair"] for x in entry["rounds"]]))
        entry["ratio_rate"] = entry["m_pairs_per_second"] / sets[0]["m_pairs_per_second"]
        entry["ratio_energy"] = entry["uj_per_pair"] / sets[0]["uj_per_pair"]
    return {"pairs": n, "rounds": rounds, "seconds_per_round": seconds, "sets": sets}


def print_comparison(report: dict) -> None:
    cmp = report["compare"]
    print(f"\n{report['device']}  {cmp['pairs']} pairs per batch, {cmp['rounds']} rounds of "
          f"{cmp['seconds_per_round']:.0f} s; baseline {report['kernels']}")
    print(f"{'variant':<60} {'M pairs/s':>10} {'x':>6} {'uJ/pair':>8} {'x':>6}  top layers ms")
    for e in cmp["sets"]:
        print(f"{e['label'][:60]:<60} {e['m_pairs_per_second']:10.2f} {e['ratio_rate']:6.3f} "
              f"{e['uj_per_pair']:8.3f} {e['ratio_energy']:6.3f}  {' / '.join(f'{ms:.3f}' for ms in e['top_ms'])}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows-scale", type=float, default=1.0, help="fraction of the full table rows")
    ap.add_argument("--batches", type=int_list, default="65536,262144,1048576")
    ap.add_argument("--system", action="store_true",
                    help="the kernels of this machine's Offline config (configs/dlrm/systems.json)")
    ap.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                    help=f"a kernel setting ({', '.join(KERNEL_SETTINGS)}), repeatable")
    ap.add_argument("--sustain", type=float, default=0.0,
                    help="seconds of back-to-back graph replays of the largest batch, reported per second with the "
                         "SM clock and power (0: skip)")
    ap.add_argument("--compare", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE...]",
                    help="a kernel variant to measure against the settings above (repeatable): sustained replay of "
                         "the largest batch in interleaved rounds")
    ap.add_argument("--rounds", type=int, default=3, help="--compare: interleaved rounds per variant")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    args = ap.parse_args()
    if not args.batches:
        ap.error("--batches: give at least one batch size")
    if args.compare and (args.sustain <= 0 or args.rounds < 1):
        ap.error("--compare needs --sustain SECONDS > 0 and --rounds >= 1")
    try:
        settings = bench_settings(args.system, args.settings)
        variants = [settings.with_values(kernel_overrides(spec.split(","), "--compare"), "--compare")
                    for spec in args.compare]
    except (argparse.ArgumentTypeError, UserError) as exc:  # names the setting and what it expects
        ap.error(str(exc))
    if not torch.cuda.is_available():
        print("bench_cuda.py: error: needs a CUDA GPU (the kernels' CPU check is tests/test_cuda_kernels.py, "
              "in Triton's interpreter)", file=sys.stderr)
        return 2
    import triton

    device = torch.device("cuda")
    cards = [max(1, int(c * args.rows_scale)) for c in CRITEO_TB_CARDINALITIES]
    t0 = time.time()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "table_rows": sum(cards), "table_gb": sum(cards) * 128 / 1e9,
              "kernels": {key: getattr(settings, key) for key in KERNEL_SETTINGS}}
    report["copy_gbps"] = copy_bandwidth(device)
    qm, tables, offsets = build(cards, device)
    report["build_seconds"] = time.time() - t0
    if args.compare:
        report["compare"] = compare_variants(qm, tables, offsets, cards, device, max(args.batches), settings,
                                             variants, args.compare, args.rounds, args.sustain)
        write_report(args.out, "bench_cuda_compare.json", report)
        print_comparison(report)
        return 0
    report["correctness"] = check_correctness(qm, tables, offsets, cards, device, settings)
    print(json.dumps(report["correctness"]), flush=True)
    report["batches"] = []
    big = max(args.batches)
    for n in args.batches:
        res = bench_batch(qm, tables, offsets, cards, device, n, report["copy_gbps"], settings,
                          args.sustain if n == big else 0.0)
        report["batches"].append(res)
        print(f"batch {n}: {res['graph_pairs_per_second'] / 1e6:.1f} M pairs/s as one graph "
              f"({res['graph_pairs_per_second'] / 270.0:,.0f} samples/s at 270 pairs)", flush=True)
    report["torch_fp16_eager_pairs_per_second"] = torch_fp16_baseline(cards, device, min(big, 65536), tables, offsets)
    write_report(args.out, "bench_cuda.json", report)
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    print(f"\n{report['device']}  copy {report['copy_gbps']:.0f} GB/s  tables {report['table_gb']:.1f} GB  "
          f"kernels {report['kernels']}")
    print(f"correctness: {report['correctness']}")
    for b in report["batches"]:
        print(f"\n-- batch {b['pairs']} pairs: {b['end_to_end_ms']:.3f} ms, {b['pairs_per_second'] / 1e6:.1f} M pairs/s; "
              f"as one CUDA graph {b['graph_ms']:.3f} ms, {b['graph_pairs_per_second'] / 1e6:.1f} M pairs/s; "
              f"torch._int_mm top MLP {b['torch_int_mm_top_ms']:.3f} ms")
        print(f"{'stage':<12} {'ms':>8} {'roofline':>9} {'TOPS':>7} {'GB/s':>7}")
        for name, s in b["stages"].items():
            print(f"{name:<12} {s['ms']:8.3f} {s['roofline_ms']:9.3f} {s['tops']:7.1f} {s['gbps']:7.0f}")
        for w, row in enumerate(b.get("sustained", [])):
            print(f"sustained replay, second {w + 1}: {row['ms_per_batch']:.3f} ms/batch, "
                  f"{row['m_pairs_per_second']:.1f} M pairs/s, SM {row.get('sm_mhz', 0):.0f} MHz, "
                  f"{row.get('power_w', 0):.0f} W, {row.get('temp_c', 0):.0f} C")
    print(f"\ntorch eager fp16 forward baseline: {report['torch_fp16_eager_pairs_per_second'] / 1e6:.1f} M pairs/s")


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
