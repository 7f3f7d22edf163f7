"""The int8 recipe's emulation against the FP32 formula: close predictions on a random model."""

from __future__ import annotations

import torch

from dlrm_bench.quant.recipe import emulate_forward, interaction_pairs, quantize_numeric
from tests.quant_fixtures import random_inputs, random_quantized

CARDS = [1000, 50, 7, 300, 2, 64, 100, 5, 3, 900, 17, 40, 10, 8, 33, 12, 4, 60, 14, 700, 500, 800, 90, 70, 6, 36]


def fp32_forward(sd: dict, numeric: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
    x = numeric
    for i in range(3):
        x = torch.relu(x @ sd[f"bot_l.{2 * i}.weight"].T + sd[f"bot_l.{2 * i}.bias"])
    emb = torch.stack([sd[f"emb_l.{t}.weight"][cat[:, t].long()] for t in range(26)], 1)
    vec = torch.cat([x[:, None], emb], 1)
    r, c = interaction_pairs()
    h = torch.cat([x, (vec @ vec.transpose(1, 2))[:, r, c]], 1)
    for i in range(5):
        h = h @ sd[f"top_l.{2 * i}.weight"].T + sd[f"top_l.{2 * i}.bias"]
        h = torch.relu(h) if i < 4 else torch.sigmoid(h)
    return h[:, 0]


def test_interaction_order_is_the_references() -> None:
    r, c = interaction_pairs()
    assert r.numel() == 351
    assert list(zip(r[:6].tolist(), c[:6].tolist())) == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]


def test_int8_emulation_tracks_fp32() -> None:
    sd, qm, tables, offsets = random_quantized(0, CARDS)
    numeric, cat = random_inputs(7, 2000, CARDS)
    ref = fp32_forward(sd, quantize_numeric(numeric).float() * (14.2313 / 127), cat)
    got = emulate_forward(qm, tables, offsets, quantize_numeric(numeric), cat)
    assert got.shape == (2000,) and got.dtype == torch.float32
    err = (got - ref).abs()
    assert float(err.max()) < 0.05, float(err.max())
    assert float(err.mean()) < 0.01, float(err.mean())
