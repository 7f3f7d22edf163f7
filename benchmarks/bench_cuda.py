#!/usr/bin/env python3
"""CUDA engine kernels at full scale: each kernel against its roofline, end-to-end pairs/s per batch size, and
torch baselines measured in the same run.

The model is the criteo-tb-random shape (187,767,399 rows x 128 int8 = 24 GB on the GPU) with random weights,
generated on the device; inputs use a skewed (power-law) id distribution per table with the hot rows at the start
of each table ("interaction"), and the same ids spread over the table by a bijection ("inter_spread", as the
criteo-tb-random preset and the real data place hot rows). Each batch is timed kernel by kernel and as one CUDA
graph (how the engine replays it). Correctness is checked first: the kernels' probabilities against the int8
recipe's emulation on a few thousand pairs.

    python3 benchmarks/bench_cuda.py [--rows-scale 1.0] [--batches 16384,65536,262144] [--out DIR]
Prints a table and writes bench_cuda.json.
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

from dlrm_bench.random_preset import access_laws  # noqa: E402
from dlrm_bench.criteo.schema import BOTTOM_MLP, CRITEO_TB_CARDINALITIES, NUM_DENSE, TOP_MLP, TOP_MLP_INPUT  # noqa: E402
from dlrm_bench.engines.cuda.bottom_mlp import BottomMLP  # noqa: E402
from dlrm_bench.engines.cuda.interaction import Interaction, layout_columns, to_layout  # noqa: E402
from dlrm_bench.engines.cuda.kernel_library import VARIANTS as CUTLASS_VARIANTS, KernelsUnavailable  # noqa: E402
from dlrm_bench.engines.cuda.top_mlp import TopMLP, use_cutlass_hidden_layers  # noqa: E402
from dlrm_bench.quant.calibration import batch_ranges  # noqa: E402
from dlrm_bench.quant.recipe import (TOP_INPUT_PAD, build_quantized, emulate_bottom, emulate_interaction,  # noqa: E402
                                     emulate_top)

PEAK_INT8_TOPS = 1979.0
"""H100/H200 SXM dense int8 tensor-core rate (datasheet)."""


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

    from dlrm_bench.quant.recipe import quantize_numeric
    num_q = quantize_numeric(numeric.cpu()).float() * (14.2313 / 127)
    ranges = batch_ranges(sd, lookup, num_q.numpy(), cat.cpu().numpy())
    qm = build_quantized(sd, scales, ranges)
    return qm, tables, offsets


def gpu_bench_model(script: str, rows_scale: float):
    """(device, cards, qm, tables, offsets): the bench model on the GPU (`build`, tables at rows_scale of the full
    rows), or None after printing `script: error: needs a CUDA GPU` when there is none."""
    if not torch.cuda.is_available():
        print(f"{script}: error: needs a CUDA GPU", file=sys.stderr)
        return None
    device = torch.device("cuda")
    cards = [max(1, int(c * rows_scale)) for c in CRITEO_TB_CARDINALITIES]
    return (device, cards, *build(cards, device))


def check_correctness(qm, tables, offsets, cards, device, n: int = 4096, layout: str = "triangle") -> dict:
    from dlrm_bench.quant.recipe import quantize_numeric
    numeric_q = quantize_numeric(random_numeric(n, device, 11).cpu())
    cat = skewed_ids(cards, n, device, 12)
    rows_cpu = tables[(cat.long() + offsets.to(device)[None, :])].cpu()
    dense = emulate_bottom(qm, numeric_q)
    recipe_top_in = emulate_interaction(qm, dense, rows_cpu)
    want = emulate_top(qm, recipe_top_in)
    want_top_in = to_layout(recipe_top_in, layout)
    bottom, inter = BottomMLP(qm, device), Interaction(qm, tables, offsets, layout=layout)
    top = TopMLP(qm, device, interaction_layout=layout)
    top_in = torch.full((n, TOP_INPUT_PAD), 99, dtype=torch.int8, device=device)
    top_in[:, 479:] = 0
    bottom(numeric_q.to(device), None, n, top_in)
    inter(cat, None, n, top_in)
    buffers = [torch.empty(n, w, dtype=torch.int8, device=device) for w in top.widths]
    probs = torch.full((n,), float("nan"), device=device)
    top(top_in, buffers, probs, n)
    used = torch.cat([torch.arange(128), layout_columns(layout)])  # the paired layout's spare columns vary
    diff = (top_in.cpu()[:, used].to(torch.int16) - want_top_in[:, used].to(torch.int16)).abs()
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


def bench_batch(qm, tables, offsets, cards, device, n: int, peak_bw: float, top_configs=None,
                layout: str = "triangle", front_parts: tuple[int, ...] = (), sustain_seconds: float = 0.0) -> dict:
    numeric = torch.randint(-20, 127, (n, 13), dtype=torch.int8, device=device)
    cat = skewed_ids(cards, n, device, 100 + n)
    bottom, inter = BottomMLP(qm, device), Interaction(qm, tables, offsets, layout=layout)
    top = TopMLP(qm, device, top_configs, interaction_layout=layout)
    top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
    buffers = [torch.empty(n, w, dtype=torch.int8, device=device) for w in top.widths]
    probs = torch.empty(n, device=device)
    cat_scattered = scattered(cat, cards, 100 + n)
    stages = {"bottom_mlp": lambda: bottom(numeric, None, n, top_in),
              "interaction": lambda: inter(cat, None, n, top_in),
              "inter_spread": lambda: inter(cat_scattered, None, n, top_in)}
    inputs = [top_in, *buffers]
    outs = [*buffers, probs]
    for i in range(4):
        stages[f"top_{i}"] = (lambda i=i: top.layer(i, inputs[i], outs[i], n))
    costs = layer_costs()
    result = {"pairs": n, "stages": {}}
    costs["inter_spread"] = costs["interaction"]
    for name, fn in stages.items():
        ms = timed(fn)
        ops, nbytes = costs[name]
        result["stages"][name] = {
            "ms": ms, "tops": ops * n / (ms / 1e3) / 1e12, "gbps": nbytes * n / (ms / 1e3) / 1e9,
            "roofline_ms": max(ops * n / (PEAK_INT8_TOPS * 1e12), nbytes * n / (peak_bw * 1e9)) * 1e3}

    def whole() -> None:
        bottom(numeric, None, n, top_in)
        inter(cat, None, n, top_in)
        top(top_in, buffers, probs, n)

    ms = timed(whole)
    result["end_to_end_ms"] = ms
    result["pairs_per_second"] = n / (ms / 1e3)
    result["samples_per_second_at_270"] = result["pairs_per_second"] / 270.0
    graph = whole_batch_graph(whole)
    result["graph_ms"] = timed(graph.replay)
    result["graph_pairs_per_second"] = n / (result["graph_ms"] / 1e3)
    if sustain_seconds > 0:
        result["sustained"] = sustained(graph.replay, n, sustain_seconds)
    result["front_pipeline_graph_ms"] = {}
    for parts in front_parts:
        for high in (False, True):
            g = front_pipeline_graph(lambda lo, hi: bottom(numeric[lo:hi], None, hi - lo, top_in[lo:hi]),
                                     lambda lo, hi: inter(cat[lo:hi], None, hi - lo, top_in[lo:hi]),
                                     lambda: top(top_in, buffers, probs, n), n, parts, high)
            result["front_pipeline_graph_ms"][f"{parts} parts{', side stream high priority' if high else ''}"] = \
                timed(g.replay)
    result["torch_int_mm_top_ms"] = timed(lambda: torch_int_mm_top(qm, top_in, device))
    return result


def apply_top_gemm(top: TopMLP, variant: str, final_layer: bool, script: str) -> bool:
    """`top`'s layers on `variant` ("triton": unchanged; a CUTLASS variant: the hidden layers, with final_layer the
    last one too). False, after `script: error: ...` on stderr, where the library or the GPU cannot run it."""
    if variant == "triton":
        return True
    try:
        use_cutlass_hidden_layers(top, variant, final_layer=final_layer)
    except KernelsUnavailable as exc:
        print(f"{script}: error: --top-gemm {variant}: {exc}", file=sys.stderr)
        return False
    return True


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


def front_pipeline_graph(bottom_part, inter_part, top_all, n: int, parts: int,
                         high_priority: bool) -> "torch.cuda.CUDAGraph":
    """One batch as a CUDA graph whose front is pipelined over `parts` slices of the pairs: a side stream runs the
    bottom MLP slice after slice while the main stream runs each slice's interaction as soon as its bottom MLP is
    done, so the compute-bound bottom MLP of slice k+1 can share the SMs with the memory-bound gather of slice k;
    then the top MLP on the whole batch. bottom_part / inter_part: (lo, hi) -> launch on the current stream."""
    bounds = [(n * k // parts, n * (k + 1) // parts) for k in range(parts)]
    side = torch.cuda.Stream(priority=-1 if high_priority else 0)

    def record() -> None:
        main = torch.cuda.current_stream()
        side.wait_stream(main)
        done = []
        with torch.cuda.stream(side):
            for lo, hi in bounds:
                bottom_part(lo, hi)
                event = torch.cuda.Event()
                event.record(side)
                done.append(event)
        for (lo, hi), event in zip(bounds, done):
            main.wait_event(event)
            inter_part(lo, hi)
        main.wait_stream(side)
        top_all()

    return whole_batch_graph(record)


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


GEMM_TILES = [(128, 256, 128, 8, 3, 1), (128, 256, 128, 8, 4, 1), (256, 128, 128, 8, 3, 1), (256, 128, 64, 8, 4, 1)]
"""(block_m, block_n, block_k, num_warps, num_stages, programs_per_sm) of the TMA GEMM candidates."""
GEMM_FLAGS = {"": {}, "store": {"tma_store": True},
              "ws": {"warp_specialize": True}, "ws+store": {"warp_specialize": True, "tma_store": True},
              "store+folded": {"tma_store": True, "epilogue": "folded"},
              "ws+store+folded": {"warp_specialize": True, "tma_store": True, "epilogue": "folded"},
              "store+raw": {"tma_store": True, "epilogue": "raw"},
              "ws+store+raw": {"warp_specialize": True, "tma_store": True, "epilogue": "raw"}}
"""Epilogue / scheduling variants of top_mlp.GemmConfig tried on every tile ("raw" = no epilogue math, a wrong
result: the main loop's own speed; never picked as best)."""
TWO_PER_SM_TILES = [(128, 128, 128, 4, 3, 2), (128, 128, 64, 4, 4, 2), (128, 128, 128, 8, 3, 2),
                    (64, 256, 128, 4, 2, 2)]
"""Smaller tiles with two programs per SM (shared memory and registers for two), so one program's epilogue can
overlap the other's main loop; tried with the flags in TWO_PER_SM_FLAGS."""
TWO_PER_SM_FLAGS = ["store+folded", "store+raw"]
FINAL_TWO_PER_SM_TILES = [(64, 256, 128, 4, 2, 2), (64, 256, 64, 4, 3, 2), (128, 128, 128, 4, 3, 2),
                          (128, 128, 64, 4, 4, 2), (128, 128, 128, 8, 3, 2)]
"""Two programs per SM for the final layer: 64-row tiles spanning all 256 columns, or 128 x 128 tiles that walk
the two column halves in turn (top_mlp._final_layer_tma_kernel)."""


HIDDEN_LAYER_PRESETS = {
    "wide": dict(block_m=128, block_n=256, block_k=128, num_warps=8, num_stages=3, programs_per_sm=1),
    "k64": dict(block_m=128, block_n=128, block_k=64, num_warps=4, num_stages=4, programs_per_sm=2),
    "tall": dict(block_m=256, block_n=128, block_k=128, num_warps=8, num_stages=3, programs_per_sm=1),
}
"""Alternative tiles for the three hidden top layers (TMA, TMA store, folded epilogue), for --hidden-layers: to
compare configurations under sustained load (--sustain), where the GPU runs at its power limit."""


def hidden_layer_preset(name: str, qm, device: torch.device) -> list | None:
    """The top-MLP configs with the hidden layers set to HIDDEN_LAYER_PRESETS[name] (None for "default")."""
    if name == "default":
        return None
    from dlrm_bench.engines.cuda.top_mlp import GemmConfig, TopMLP
    configs = TopMLP(qm, device).configs
    hidden = GemmConfig(**HIDDEN_LAYER_PRESETS[name], tma=True, tma_store=True, epilogue="folded")
    return [hidden if i < len(configs) - 1 else c for i, c in enumerate(configs)]


def gemm_candidates(final: bool, n: int, flag_names: list[str]) -> dict[str, "GemmConfig"]:
    """The pointer kernel, then every TMA tile with each of the GEMM_FLAGS variants named in flag_names
    ("none" = plain TMA), then the two-per-SM tiles (not for the final layer)."""
    from dlrm_bench.engines.cuda.top_mlp import GemmConfig
    out = {"pointer 128x256x128 s3": GemmConfig(128, min(256, n), 128, 8, 8, 3)}
    tiles = [(t, name) for t in GEMM_TILES for name in GEMM_FLAGS if (name or "none") in flag_names]
    if not final:
        tiles += [(t, name) for t in TWO_PER_SM_TILES for name in TWO_PER_SM_FLAGS if name in flag_names]
    else:
        tiles += [(t, "") for t in FINAL_TWO_PER_SM_TILES]
    for (bm, bn, bk, warps, stages, per_sm), name in tiles:
        if (final and "store" in name) or bn > n:
            continue
        key = f"tma {bm}x{bn}x{bk} w{warps} s{stages}" + (f" x{per_sm}/SM" if per_sm > 1 else "") + \
            (f" {name}" if name else "")
        out[key] = GemmConfig(bm, bn, bk, 8, warps, stages, tma=True, programs_per_sm=per_sm, **GEMM_FLAGS[name])
    return out


def tune_top(qm, device, n: int, flag_names: list[str]) -> dict:
    """Every GEMM candidate on each top layer at batch n: TOPS, and whether its output equals the default's."""
    top = TopMLP(qm, device)
    defaults = list(top.configs)
    shapes = [(w.shape[1], w.shape[0]) for w in top.w]
    out: dict = {"top": {}, "cublas_int_mm_tops": {}, "best": [], "best_configs": []}
    for i, (k, nn) in enumerate(shapes):
        final = i == len(shapes) - 1
        x = torch.randint(-50, 50, (n, k), dtype=torch.int8, device=device)

        def fresh() -> torch.Tensor:
            return (torch.zeros(n, dtype=torch.float32, device=device) if final
                    else torch.zeros(n, nn, dtype=torch.int8, device=device))

        reference = fresh()
        top.configs[i] = defaults[i]
        top.layer(i, x, reference, n)
        res = {}
        for key, cfg in gemm_candidates(final, nn, flag_names).items():
            top.configs[i] = cfg
            dst = fresh()
            try:
                top.layer(i, x, dst, n)
                torch.cuda.synchronize()
                diff = float((dst.float() - reference.float()).abs().max())
                ms = timed(lambda: top.layer(i, x, dst, n), 10)
                res[key] = {"tops": 2 * k * nn * n / (ms / 1e3) / 1e12, "ms": ms, "max_diff": diff}
            except Exception as exc:  # out of resources, unsupported on this Triton, ...
                res[key] = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"  top {k}x{nn} {key}: {res[key]}", flush=True)
        top.configs[i] = defaults[i]
        out["top"][f"{k}x{nn}"] = res
        w = torch.randint(-50, 50, (k, nn), dtype=torch.int8, device=device)
        ms = timed(lambda: torch._int_mm(x, w), 10)
        out["cublas_int_mm_tops"][f"{k}x{nn}"] = 2 * k * nn * n / (ms / 1e3) / 1e12
        good = [(v["tops"], key) for key, v in res.items() if "tops" in v and v["max_diff"] <= (1e-5 if final else 1)]
        best = max(good, default=(0.0, ""))
        out["best"].append(best[1])
        out["best_configs"].append(gemm_candidates(final, nn, flag_names).get(best[1], defaults[i]))
        print(f"top {k}x{nn}: best {best}, "
              f"cuBLAS _int_mm {out['cublas_int_mm_tops'][f'{k}x{nn}']:.0f} TOPS", flush=True)
    return out


def tune(qm, tables, offsets, cards, device, n: int, parts: str = "top,bottom,interaction",
         gemm_flags: str = ",".join(name or "none" for name in GEMM_FLAGS)) -> dict:
    """Time candidate tile configurations of the kernels named in `parts` at batch n (TOPS / ms)."""
    out: dict = {}
    if "top" in parts:
        out.update(tune_top(qm, device, n, gemm_flags.split(",")))
    top_in = torch.zeros(n, TOP_INPUT_PAD, dtype=torch.int8, device=device)
    if "bottom" in parts:
        out["bottom"] = tune_bottom(qm, device, n, top_in)
    if "interaction" in parts:
        out["interaction"] = tune_interaction(qm, tables, offsets, cards, device, n, top_in)
    print("bottom ms:", out.get("bottom"), "\ninteraction ms:", out.get("interaction"), flush=True)
    return out


def tune_bottom(qm, device, n: int, top_in: torch.Tensor) -> dict:
    """ms of the fused bottom MLP per (rows per program, chunk, warps, pipeline stages, layer 1 on fp16 or int8
    tensor cores)."""
    numeric = torch.randint(-20, 127, (n, 13), dtype=torch.int8, device=device)
    res = {}
    for bm, chunk, warps, stages in [(64, 128, 4, 1), (64, 64, 4, 1), (128, 64, 8, 1), (64, 128, 4, 2),
                                     (64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 128, 8, 2),
                                     (32, 128, 4, 2), (64, 128, 8, 2)]:
        for fp16 in (True, False):
            op = BottomMLP(qm, device, bm, chunk, warps, stages, layer1_fp16=fp16)
            key = f"{bm}/{chunk}/{warps}/s{stages}/{'fp16' if fp16 else 'int8'}"
            try:
                res[key] = timed(lambda: op(numeric, None, n, top_in), 10)
            except Exception as exc:
                res[key] = f"failed: {type(exc).__name__}"
    return res


def tune_interaction(qm, tables, offsets, cards, device, n: int, top_in: torch.Tensor) -> dict:
    """ms of the gather + interaction per (pairs per program, warps, iterations, stages), and the no-scatter
    probe."""
    cat = skewed_ids(cards, n, device, 5)
    res = {}
    tiles = [(4, 4, 1, 1), (2, 2, 1, 1), (2, 4, 1, 1), (4, 4, 4, 2), (4, 4, 8, 3), (4, 4, 16, 3), (2, 2, 8, 3),
             (8, 4, 4, 2), (4, 8, 8, 2), (4, 4, 32, 4)]
    variants = [(tile, "triangle") for tile in tiles] + [(tile, "paired") for tile in
                                                          [(4, 4, 1, 1), (4, 4, 8, 3), (8, 4, 4, 2), (8, 4, 1, 1),
                                                           (8, 8, 1, 1), (16, 8, 1, 1), (2, 2, 1, 1)]]
    for (bp, warps, iters, stages), layout in variants:
        op = Interaction(qm, tables, offsets, bp, warps, iters, stages, layout=layout)
        key = f"{bp}/{warps}/{iters}/{stages}" + (" paired" if layout == "paired" else "")
        try:
            res[key] = timed(lambda: op(cat, None, n, top_in), 10)
        except Exception as exc:
            res[key] = f"failed: {type(exc).__name__}"
    for bp, warps in [(4, 4), (8, 4), (8, 8)]:
        op = Interaction(qm, tables, offsets, bp, warps, probe_no_scatter=True)
        res[f"{bp}/{warps}/1/1 no scatter (probe)"] = timed(lambda: op(cat, None, n, top_in), 10)
    return res


def int_list(text: str) -> list[int]:
    """argparse type: "1,2,3" -> [1, 2, 3] (empty: []); each a positive integer."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows-scale", type=float, default=1.0, help="fraction of the full table rows")
    ap.add_argument("--batches", type=int_list, default="16384,65536,131072,262144")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "build/bench")))
    ap.add_argument("--tune", action="store_true", help="also time candidate tile configurations")
    ap.add_argument("--interaction-layout", default="paired", choices=("triangle", "paired"),
                    help="the interaction's output columns (engines/cuda/interaction.py) for the correctness check "
                         "and the end-to-end batches")
    ap.add_argument("--front-parts", type=int_list, default="",
                    help="slices of the front pipeline graphs timed per batch (bottom MLP on a side stream beside "
                         "the interaction; empty: none)")
    ap.add_argument("--sustain", type=float, default=0.0,
                    help="seconds of back-to-back graph replays of the largest batch, reported per second with the "
                         "SM clock and power (0: skip)")
    ap.add_argument("--hidden-layers", default="default", choices=["default", *HIDDEN_LAYER_PRESETS],
                    help="tiles of the hidden top layers for the batches (HIDDEN_LAYER_PRESETS)")
    ap.add_argument("--top-gemm", default="triton", choices=["triton", *CUTLASS_VARIANTS],
                    help="the hidden top layers' kernels for the batches: Triton, or a CUTLASS variant (as the "
                         "engine's top_gemm setting; needs make kernels and a Hopper GPU)")
    ap.add_argument("--cutlass-final", action="store_true",
                    help="with a CUTLASS --top-gemm: the final layer on CUTLASS too (cutlass_final_layer)")
    ap.add_argument("--tune-parts", default="top,bottom,interaction", help="kernels --tune times")
    ap.add_argument("--gemm-flags", default=",".join(name or "none" for name in GEMM_FLAGS),
                    help="GEMM variants --tune tries on each tile (names of GEMM_FLAGS; none = plain TMA)")
    ap.add_argument("--apply-best", action="store_true",
                    help="time the batches with the fastest top-MLP GEMM configuration --tune found per layer")
    args = ap.parse_args()
    if not args.batches:
        ap.error("--batches: give at least one batch size")
    if args.cutlass_final and args.top_gemm == "triton":
        ap.error("--cutlass-final needs a CUTLASS --top-gemm")
    if not torch.cuda.is_available():
        print("bench_cuda.py: error: needs a CUDA GPU (the kernels' CPU check is tests/test_cuda_kernels.py, "
              "in Triton's interpreter)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    cards = [max(1, int(c * args.rows_scale)) for c in CRITEO_TB_CARDINALITIES]
    t0 = time.time()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "table_rows": sum(cards), "table_gb": sum(cards) * 128 / 1e9}
    import triton
    report["triton"] = triton.__version__
    report["copy_gbps"] = copy_bandwidth(device)
    qm, tables, offsets = build(cards, device)
    report["build_seconds"] = time.time() - t0
    report["interaction_layout"] = args.interaction_layout
    report["correctness"] = check_correctness(qm, tables, offsets, cards, device, layout=args.interaction_layout)
    print(json.dumps(report["correctness"]), flush=True)
    top_configs = hidden_layer_preset(args.hidden_layers, qm, device)
    if args.top_gemm != "triton":
        top = TopMLP(qm, device, top_configs)
        if not apply_top_gemm(top, args.top_gemm, args.cutlass_final, "bench_cuda.py"):
            return 2
        top_configs = top.configs
    if top_configs:
        report["top_configs_used"] = [str(c) for c in top_configs]
    if args.tune:
        report["tuning"] = tune(qm, tables, offsets, cards, device, 262144, args.tune_parts, args.gemm_flags)
        if args.apply_best and report["tuning"].get("best_configs"):
            top_configs = report["tuning"].pop("best_configs")
            report["top_configs_used"] = [str(c) for c in top_configs]
        report["tuning"].pop("best_configs", None)
    report["batches"] = []
    big = max(args.batches)
    for n in args.batches:
        res = bench_batch(qm, tables, offsets, cards, device, n, report["copy_gbps"], top_configs,
                          args.interaction_layout, tuple(args.front_parts), args.sustain if n == big else 0.0)
        report["batches"].append(res)
        print(f"batch {n}: {res['pairs_per_second'] / 1e6:.1f} M pairs/s "
              f"({res['samples_per_second_at_270']:,.0f} samples/s at 270 pairs)", flush=True)
    report["torch_fp16_eager_pairs_per_second"] = torch_fp16_baseline(cards, device, min(big, 65536), tables, offsets)
    write_report(args.out, "bench_cuda.json", report)
    print_table(report)
    return 0


def print_table(report: dict) -> None:
    print(f"\n{report['device']}  copy {report['copy_gbps']:.0f} GB/s  tables {report['table_gb']:.1f} GB")
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
        for name, ms in b.get("front_pipeline_graph_ms", {}).items():
            print(f"front pipeline graph, {name}: {ms:.3f} ms ({ms / b['graph_ms']:.3f}x the plain graph)")
    print(f"\ntorch eager fp16 forward baseline: {report['torch_fp16_eager_pairs_per_second'] / 1e6:.1f} M pairs/s")


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
