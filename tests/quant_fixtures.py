"""Random models for quantization tests: a reference-layout state_dict, int8 tables and calibrated ranges."""

from __future__ import annotations

import torch

from dlrm_bench.criteo.schema import BOTTOM_MLP, EMBEDDING_DIM, NUM_DENSE, NUM_SPARSE, TOP_MLP, TOP_MLP_INPUT
from dlrm_bench.quant.recipe import (QuantizedDLRM, build_quantized, emulate_bottom, gather_rows, interaction_pairs,
                                     quantize_numeric, symmetric_scale)


def random_state_dict(seed: int, cardinalities: list[int]) -> dict[str, torch.Tensor]:
    """fp32 weights in the reference layout with the reference's init scale."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def layers(prefix: str, sizes: list[int]) -> None:
        for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
            sd[f"{prefix}.{2 * i}.weight"] = torch.randn(n, k, generator=g) * (2.0 / (k + n)) ** 0.5
            sd[f"{prefix}.{2 * i}.bias"] = torch.randn(n, generator=g) * (1.0 / n) ** 0.5

    layers("bot_l", [NUM_DENSE, *BOTTOM_MLP])
    layers("top_l", [TOP_MLP_INPUT, *TOP_MLP])
    for t, rows in enumerate(cardinalities):
        sd[f"emb_l.{t}.weight"] = (torch.rand(rows, EMBEDDING_DIM, generator=g) - 0.5) * 2 * (1.0 / rows) ** 0.5
    return sd


def int8_tables(sd: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tables int8 [R, 128], offsets int64 [26], scales fp32 [26]) with scale max|W| / 127.5 as the .bin file."""
    q, scales = [], []
    for t in range(NUM_SPARSE):
        w = sd[f"emb_l.{t}.weight"]
        s = float(w.abs().max()) / 127.5
        q.append(torch.clamp(torch.round(w / s), -127, 127).to(torch.int8))
        scales.append(s)
    sizes = torch.tensor([x.shape[0] for x in q])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(sizes, 0)[:-1]])
    return torch.cat(q), offsets, torch.tensor(scales)


def fp32_activation_ranges(sd: dict[str, torch.Tensor], numeric: torch.Tensor,
                           categorical: torch.Tensor) -> dict[str, torch.Tensor]:
    """max |activation| per channel of the fp32 model on the given inputs (a stand-in calibration set)."""
    ranges = {}
    x = numeric
    for i in range(3):
        x = torch.relu(x @ sd[f"bot_l.{2 * i}.weight"].T + sd[f"bot_l.{2 * i}.bias"])
        ranges[f"bot_l.{2 * i}"] = x.abs().amax(0)
    emb = torch.stack([sd[f"emb_l.{t}.weight"][categorical[:, t].long()] for t in range(NUM_SPARSE)], 1)
    vec = torch.cat([x[:, None], emb], 1)
    gram = vec @ vec.transpose(1, 2)
    r, c = interaction_pairs()
    dots = gram[:, r, c]
    ranges["interaction"] = dots.abs().amax(0)
    h = torch.cat([x, dots], 1)
    for i in range(4):
        h = torch.relu(h @ sd[f"top_l.{2 * i}.weight"].T + sd[f"top_l.{2 * i}.bias"])
        ranges[f"top_l.{2 * i}"] = h.abs().amax(0)
    return ranges


def random_inputs(seed: int, batch: int, cardinalities: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """numeric fp32 [B, 13] (log1p of skewed counts) and categorical int32 [B, 26]."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.floor(torch.exp(torch.rand(batch, NUM_DENSE, generator=g) * 8)) - 1
    numeric = torch.log1p(torch.clamp(counts, min=0))
    cat = torch.stack([torch.randint(0, n, (batch,), generator=g) for n in cardinalities], 1).to(torch.int32)
    return numeric, cat


def random_quantized(seed: int, cardinalities: list[int]) -> tuple[dict, QuantizedDLRM, torch.Tensor, torch.Tensor]:
    """(fp32 state_dict, QuantizedDLRM, int8 tables, offsets) calibrated on 512 random pairs."""
    sd = random_state_dict(seed, cardinalities)
    tables, offsets, scales = int8_tables(sd)
    numeric, cat = random_inputs(seed + 1, 512, cardinalities)
    qm = build_quantized(sd, scales, fp32_activation_ranges(sd, numeric, cat))
    return sd, qm, tables, offsets


__all__ = ["random_quantized", "random_inputs", "random_state_dict", "quantize_numeric", "emulate_bottom",
           "gather_rows", "symmetric_scale"]
