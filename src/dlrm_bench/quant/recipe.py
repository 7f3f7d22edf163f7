"""The INT8 recipe every int8 engine implements, and its exact PyTorch emulation (the int8 oracle).

Quantities (all symmetric, zero point 0, round half to even, clamp to [-127, 127]):

* numerical input: q = trunc(log1p(x) * 127 / 14.2313) (numeric_int8_linear.npy), scale 14.2313 / 127.
* embedding rows: int8 with one scale per table, max|W_t| / 127.5 (the .bin file).
* every MLP layer: int8 weights with one scale per output channel, int32 accumulation, fp32 epilogue
  y = acc * w_scale[n] + bias[n]; ReLU; requantized to int8 with one scale per output channel
  (`act_scale`, from the calibration cache; requantization multiplies by its fp32 reciprocal). A layer's input channel scales are folded into its weights before
  they are quantized: W'[n, k] = W[n, k] * in_scale[k], so the integer product needs no per-input rescale.
* the bottom MLP's last output (the dense vector) uses ONE scale for all 128 channels, so that it can be dotted
  with embedding rows in integers.
* interaction: int32 dots of the 27 int8 vectors (dense + 26 rows); dot(i, j) in real units is
  idot * s_i * s_j; the 351 lower-triangle dots are requantized with one scale per column (calibrated), as
  round(idot * (s_i * s_j / column scale)) with the multiplier precomputed in fp32.
  Top-MLP input = [dense int8 (128, dense scale), dots int8 (351, per-column scales), zeros (33)] = 512 columns.
* the last top layer (256 -> 1) takes the fp32 ReLU output of the layer before (not requantized), adds its bias
  and applies the sigmoid: fused into the previous layer's epilogue on the GPU.

Shapes: B = pairs. The emulation works in int32/fp32 exactly as the fast kernels do, so a fast kernel must match
it up to rare one-step rounding differences (fused multiply-add order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dlrm_bench.criteo.schema import EMBEDDING_DIM, INT8_NUMERIC_SCALE, NUM_DENSE, NUM_SPARSE

NUMERIC_SCALE = 1.0 / INT8_NUMERIC_SCALE
"""Real value of one step of numeric_int8 (14.2313 / 127)."""
NUMERIC_PAD = 16
"""The 13 numerical inputs padded to 16 (numeric_int8_chw4) for aligned integer products."""
TOP_INPUT_PAD = 512
"""Top-MLP input columns: 128 + 351 = 479, padded with zeros."""
EPS = 1e-12


@dataclass
class QuantLayer:
    """One int8 linear layer. weight: int8 [N, K]; w_scale, bias, act_scale: float32 [N]."""

    weight: torch.Tensor
    w_scale: torch.Tensor
    bias: torch.Tensor
    act_scale: torch.Tensor | None

    @property
    def act_inv(self) -> torch.Tensor:
        """1 / act_scale in fp32: kernels and the emulation both requantize by multiplying with it."""
        assert self.act_scale is not None
        return torch.reciprocal(self.act_scale.float())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)  # type: ignore[return-value]


@dataclass
class QuantizedDLRM:
    """Everything an int8 engine needs besides the embedding tables themselves.

    bottom: 3 layers (K = 16, 512, 256); top: 4 layers (K = 512, 1024, 1024, 512), the last with act_scale None;
    final_weight: float32 [256], final_bias: float; table_scales: float32 [26]; dense_scale: float (the single
    scale of the bottom output); dot_scales: float32 [351] (per interaction column).
    """

    bottom: list[QuantLayer]
    top: list[QuantLayer]
    final_weight: torch.Tensor
    final_bias: float
    table_scales: torch.Tensor
    dense_scale: float
    dot_scales: torch.Tensor
    meta: dict = field(default_factory=dict)

    @property
    def top_input_scales(self) -> torch.Tensor:
        """float32 [512]: the real value of one int8 step of each top-MLP input column (0 for padding)."""
        scales = torch.zeros(TOP_INPUT_PAD)
        scales[:EMBEDDING_DIM] = self.dense_scale
        scales[EMBEDDING_DIM:EMBEDDING_DIM + self.dot_scales.numel()] = self.dot_scales
        return scales


def interaction_pairs(n: int = NUM_SPARSE + 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each of the n(n-1)/2 lower-triangle entries in the reference order
    (1,0), (2,0), (2,1), (3,0), ... Returns two int64 [n(n-1)/2]."""
    rows, cols = torch.tril_indices(n, n, offset=-1)
    return rows, cols


def symmetric_scale(max_abs: torch.Tensor | float, levels: float = 127.0) -> torch.Tensor:
    """Scale that maps max_abs to `levels` steps (never 0)."""
    return torch.clamp(torch.as_tensor(max_abs, dtype=torch.float32) / levels, min=EPS)


def quantize(x: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """int8 = clamp(round_half_even(x / scale), -127, 127)."""
    return torch.clamp(torch.round(x / scale), -127, 127).to(torch.int8)


def quantize_layer(weight: torch.Tensor, bias: torch.Tensor, in_scale: torch.Tensor,
                   act_scale: torch.Tensor | None) -> QuantLayer:
    """Fold the input scales (float32 [K]) into `weight` (float32 [N, K]) and quantize per output channel."""
    folded = weight.float() * in_scale.float()[None, :]
    w_scale = symmetric_scale(folded.abs().amax(dim=1))
    return QuantLayer(quantize(folded, w_scale[:, None]), w_scale, bias.float().clone(), act_scale)


def _pad_columns(w: torch.Tensor, width: int) -> torch.Tensor:
    out = torch.zeros(w.shape[0], width, dtype=w.dtype)
    out[:, : w.shape[1]] = w
    return out


def build_quantized(state_dict: dict[str, torch.Tensor], table_scales: torch.Tensor,
                    ranges: dict[str, torch.Tensor]) -> QuantizedDLRM:
    """Quantize the MLPs of a reference-layout state_dict with calibrated activation ranges.

    ranges (max |activation| from the calibration cache): 'bot_l.0', 'bot_l.2' float32 [512], [256];
    'bot_l.4' float32 [128] (reduced to one scale); 'interaction' float32 [351]; 'top_l.0' .. 'top_l.4' [N].
    """
    bottom_keys, top_keys = ["bot_l.0", "bot_l.2", "bot_l.4"], ["top_l.0", "top_l.2", "top_l.4", "top_l.6"]
    dense_scale = float(symmetric_scale(ranges["bot_l.4"].max()))
    in_scale = torch.full((NUMERIC_PAD,), NUMERIC_SCALE)
    in_scale[NUM_DENSE:] = 0.0
    bottom = []
    for i, key in enumerate(bottom_keys):
        w = state_dict[f"{key}.weight"].float()
        if i == 0:
            w = _pad_columns(w, NUMERIC_PAD)
        act = (torch.full((w.shape[0],), dense_scale) if i == 2 else symmetric_scale(ranges[key]))
        bottom.append(quantize_layer(w, state_dict[f"{key}.bias"], in_scale, act))
        in_scale = act
    dot_scales = symmetric_scale(ranges["interaction"])
    table_scales = table_scales.float()
    qm = QuantizedDLRM(bottom, [], state_dict["top_l.8.weight"].float().reshape(-1).clone(),
                       float(state_dict["top_l.8.bias"].float().reshape(-1)[0]), table_scales, dense_scale, dot_scales)
    in_scale = qm.top_input_scales
    for i, key in enumerate(top_keys):
        w = state_dict[f"{key}.weight"].float()
        if i == 0:
            w = _pad_columns(w, TOP_INPUT_PAD)
        act = None if i == len(top_keys) - 1 else symmetric_scale(ranges[key])
        qm.top.append(quantize_layer(w, state_dict[f"{key}.bias"], in_scale, act))
        in_scale = act if act is not None else in_scale
    return qm


def int8_linear(x_q: torch.Tensor, layer: QuantLayer, relu: bool = True) -> torch.Tensor:
    """fp32 [B, N] = (int8 [B, K] @ int8 [N, K]^T) * w_scale + bias, then ReLU.

    The integer product is exact: float64 holds every int8 dot of K <= 2^38 terms without rounding."""
    acc = (x_q.to(torch.float64) @ layer.weight.to(torch.float64).T).to(torch.float32)
    y = acc * layer.w_scale + layer.bias
    return torch.relu(y) if relu else y


def requantize(y: torch.Tensor, act_inv: torch.Tensor) -> torch.Tensor:
    """int8 = clamp(round_half_even(y * act_inv), -127, 127), act_inv = 1 / scale (fp32)."""
    return torch.clamp(torch.round(y * act_inv), -127, 127).to(torch.int8)


def interaction_multipliers(qm: "QuantizedDLRM") -> torch.Tensor:
    """fp32 [27, 27]: entry (i, j) = s_i * s_j / dot_scale of its column (0 outside the lower triangle), so
    that the requantized dot is round(idot * M[i, j]). s_0 = dense scale, s_1.. = table scales."""
    slot = torch.cat([torch.tensor([qm.dense_scale], dtype=torch.float32), qm.table_scales.float()])
    r, c = interaction_pairs(slot.numel())
    m = torch.zeros(slot.numel(), slot.numel(), dtype=torch.float32)
    m[r, c] = (slot[r] * slot[c]) * torch.reciprocal(qm.dot_scales.float())
    return m


def emulate_bottom(qm: QuantizedDLRM, numeric_q: torch.Tensor) -> torch.Tensor:
    """numeric_q: int8 [B, 13 or 16] -> dense int8 [B, 128] (scale qm.dense_scale)."""
    x = numeric_q
    if x.shape[1] < NUMERIC_PAD:
        x = torch.nn.functional.pad(x, (0, NUMERIC_PAD - x.shape[1]))
    for layer in qm.bottom:
        x = requantize(int8_linear(x, layer), layer.act_inv)
    return x


def emulate_interaction(qm: QuantizedDLRM, dense_q: torch.Tensor, rows_q: torch.Tensor) -> torch.Tensor:
    """dense_q: int8 [B, 128]; rows_q: int8 [B, 26, 128] (gathered table rows) -> top input int8 [B, 512]."""
    vectors = torch.cat([dense_q[:, None, :], rows_q], dim=1).to(torch.float64)  # [B, 27, 128], exact
    gram = torch.bmm(vectors, vectors.transpose(1, 2)).to(torch.float32)  # [B, 27, 27]
    r, c = interaction_pairs()
    out = torch.zeros(dense_q.shape[0], TOP_INPUT_PAD, dtype=torch.int8)
    out[:, :EMBEDDING_DIM] = dense_q
    out[:, EMBEDDING_DIM:EMBEDDING_DIM + r.numel()] = requantize(gram[:, r, c], interaction_multipliers(qm)[r, c])
    return out


def emulate_top(qm: QuantizedDLRM, top_in: torch.Tensor) -> torch.Tensor:
    """top_in: int8 [B, 512] -> click probability float32 [B]."""
    x = top_in
    for layer in qm.top[:-1]:
        x = requantize(int8_linear(x, layer), layer.act_inv)
    hidden = int8_linear(x, qm.top[-1])  # fp32 [B, 256]
    return final_probabilities(hidden, qm.final_weight, float(qm.final_bias))


def final_probabilities(hidden: torch.Tensor, weight: torch.Tensor, bias: float) -> torch.Tensor:
    """The last layer and the sigmoid: hidden fp32 [B, 256], weight fp32 [256] -> sigmoid(hidden @ weight + bias)
    fp32 [B]. A row-wise dot (vecdot), not a gemv: MKL's gemv sums a row in an order that depends on the rows
    around it (1-ulp differences on AVX-512 machines), and a sample's probability must not depend on its batch."""
    return torch.sigmoid(torch.linalg.vecdot(hidden, weight) + bias)


def gather_rows(tables: torch.Tensor, table_offsets: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
    """tables: int8 [R_total, 128]; table_offsets: int64 [26]; categorical: int32 [B, 26] -> int8 [B, 26, 128]."""
    return tables[categorical.to(torch.int64) + table_offsets[None, :]]


def emulate_forward(qm: QuantizedDLRM, tables: torch.Tensor, table_offsets: torch.Tensor,
                    numeric_q: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
    """The whole int8 pipeline: numeric_q int8 [B, 13|16], categorical int32 [B, 26] -> float32 [B]."""
    dense = emulate_bottom(qm, numeric_q)
    top_in = emulate_interaction(qm, dense, gather_rows(tables, table_offsets, categorical))
    return emulate_top(qm, top_in)


def quantize_numeric(numeric_fp32: np.ndarray | torch.Tensor) -> torch.Tensor:
    """log1p'd float32 [B, 13] -> int8 [B, 13] as numeric_int8_linear.npy holds it (truncation toward zero)."""
    x = torch.as_tensor(np.asarray(numeric_fp32), dtype=torch.float32)
    return torch.clamp(torch.trunc(x * INT8_NUMERIC_SCALE), -127, 127).to(torch.int8)
