"""The int8 MLP layers of the CPU engine: oneDNN u8 x s8 GEMMs with the recipe's epilogue fused.

Every layer takes uint8 activations in [0, 127] (the recipe's int8 values, non-negative after ReLU) and the
recipe's int8 weights (input scales already folded in, one scale per output channel). The per-channel
requantization of the recipe, round((acc * w_scale + bias) / act_scale), is folded into the library's epilogue
as round(acc * (w_scale / act_scale) + bias / act_scale) with output scale 1 and a hardtanh(0, 127) post-op, so
the output is again uint8 in [0, 127]. (Folding changes the fp32 rounding order: an output may differ from the
emulation by one step, rarely.) The last top layer ends in fp32 (ReLU, no requantization).

Two GEMM back ends with the same results up to that rounding order:
* "int8": torch.ops.onednn.qlinear_pointwise on a prepacked weight (AVX2 vpmaddubsw here; VNNI/AMX elsewhere).
* "fp32": an fp32 GEMM on the integer values. Exact, since every partial sum of K <= 1040 products of
  magnitude <= 127 * 127 stays below 2^24. Portable, and the baseline that shows what int8 buys.
"""

from __future__ import annotations

import torch

from dlrm_bench.criteo.schema import EMBEDDING_DIM, NUM_INTERACTIONS
from dlrm_bench.engines.cpu.interaction import END, NEG, POS, TOP_WIDTH
from dlrm_bench.quant.recipe import NUMERIC_PAD, QuantizedDLRM, QuantLayer, final_probabilities

GEMMS = ("int8", "fp32")


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's int8 linear ops."""
    return hasattr(torch.ops, "onednn") and hasattr(torch.ops.onednn, "qlinear_pointwise")


class Linear:
    """One layer: uint8 [n, K] -> uint8 [n, N] in [0, 127] (requantized), or fp32 [n, N] after ReLU (last layer).

    weight: int8 [N, K]; w_scale, bias: fp32 [N]; act_inv: fp32 [N] (1 / activation scale) or None for fp32 output.
    """

    def __init__(self, weight: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor,
                 act_inv: torch.Tensor | None, gemm: str) -> None:
        if gemm not in GEMMS:
            raise ValueError(f"gemm must be one of {GEMMS}, got {gemm!r}")
        self.gemm = gemm
        self.requantize = act_inv is not None
        inv = act_inv.float() if act_inv is not None else torch.ones_like(w_scale)
        self.scale = (w_scale.float() * inv).contiguous()
        self.bias = (bias.float() * inv).contiguous()
        self.shape = tuple(weight.shape)
        if gemm == "int8":
            self.zero_points = torch.zeros(weight.shape[0], dtype=torch.int64)
            self.packed = torch.ops.onednn.qlinear_prepack(weight.contiguous(), None)
        else:
            self.weight_t = weight.float().T.contiguous()  # fp32 [K, N]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.gemm == "int8":
            if self.requantize:
                return torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, self.packed, self.scale, self.zero_points,
                                                          self.bias, 1.0, 0, torch.uint8, "hardtanh",
                                                          [0.0, 127.0], "")
            return torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, self.packed, self.scale, self.zero_points,
                                                      self.bias, 1.0, 0, torch.float32, "relu", [], "")
        y = torch.mm(x.float(), self.weight_t).mul_(self.scale).add_(self.bias)
        if self.requantize:
            return y.round_().clamp_(0.0, 127.0).to(torch.uint8)
        return y.relu_()


def _layer(q: QuantLayer, gemm: str, final: bool = False) -> Linear:
    return Linear(q.weight, q.w_scale, q.bias, None if final else q.act_inv, gemm)


def split_top_weight(weight: torch.Tensor) -> torch.Tensor:
    """int8 [N, 512] (dense | 351 dots | zero pad) -> int8 [N, TOP_WIDTH] = [W_dense, W_dots, -W_dots, 0]."""
    dots = weight[:, EMBEDDING_DIM:EMBEDDING_DIM + NUM_INTERACTIONS]
    out = torch.zeros(weight.shape[0], TOP_WIDTH, dtype=torch.int8)
    out[:, :POS] = weight[:, :EMBEDDING_DIM]
    out[:, POS:NEG] = dots
    out[:, NEG:END] = -dots  # int8 in [-127, 127]: negation never overflows
    return out


class BottomMLP:
    """numeric int8 [n, 13] (>= 0) -> dense uint8 [n, 128] in [0, 127] (the recipe's dense scale)."""

    def __init__(self, qm: QuantizedDLRM, gemm: str) -> None:
        self.layers = [_layer(q, gemm) for q in qm.bottom]

    @staticmethod
    def pad_input(numeric_q: torch.Tensor) -> torch.Tensor:
        """int8 [n, 13] -> uint8 [n, 16]: log1p'd counts are >= 0, so a negative value (bad data) becomes 0."""
        x = torch.zeros(numeric_q.shape[0], NUMERIC_PAD, dtype=torch.uint8)
        x[:, :numeric_q.shape[1]] = numeric_q.clamp(min=0).to(torch.uint8)
        return x

    def __call__(self, numeric_q: torch.Tensor) -> torch.Tensor:
        x = self.pad_input(numeric_q)
        for layer in self.layers:
            x = layer(x)
        return x


class TopMLP:
    """top input uint8 [n, TOP_WIDTH] -> click probability fp32 [n].

    Layers 0..2 requantize to uint8; layer 3 (512 -> 256) ends in fp32 ReLU; the 256 -> 1 layer and the sigmoid
    run in fp32 (a matrix-vector product)."""

    names = ("top_l.0", "top_l.2", "top_l.4", "top_l.6+8")

    def __init__(self, qm: QuantizedDLRM, gemm: str) -> None:
        first = qm.top[0]
        self.layers = [Linear(split_top_weight(first.weight), first.w_scale, first.bias, first.act_inv, gemm)]
        self.layers += [_layer(q, gemm) for q in qm.top[1:-1]]
        self.layers.append(_layer(qm.top[-1], gemm, final=True))
        self.final_weight = qm.final_weight.float().contiguous()  # [256]
        self.final_bias = float(qm.final_bias)

    def final(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 [n, 256] -> sigmoid(hidden @ w + b): fp32 [n] (the recipe's, batch-invariant)."""
        return final_probabilities(hidden, self.final_weight, self.final_bias)
