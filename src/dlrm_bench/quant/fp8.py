"""The top MLP in fp8 (e4m3) instead of int8: the same layers and scales, other 8-bit numbers.

Hopper's tensor cores multiply fp8 at the int8 rate and accumulate in fp32, so an fp8 layer's epilogue needs no
int32 -> fp32 conversion and writes its output with one packed fp32 -> e4m3 conversion per two values, where the
int8 epilogue converts, clamps and rounds each value.

Derived from the int8 recipe (quant/recipe.py) so that one calibration serves both:

* weights: the int8 weight of each layer read as e4m3 (integers up to 16 are exact in e4m3, larger ones keep
  three mantissa bits), with the int8 per-channel scale unchanged;
* activations: the value the int8 recipe would round to an integer, y * act_inv (in [0, 127] after the ReLU),
  rounded to e4m3 instead (round to nearest even);
* top-MLP input: the int8 interaction output read as e4m3, the same way as the weights.

Shapes as in recipe.py: weights [N, K], activations [B, K].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlrm_bench.quant.recipe import QuantizedDLRM

E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn value; conversions saturate there."""


def to_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Any real tensor -> float8_e4m3fn, round to nearest even, saturating at +-448 (as the GPU's satfinite
    conversion does; torch alone would turn out-of-range values into NaN)."""
    return x.float().clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


@dataclass
class Fp8Top:
    """The four top layers in e4m3. weights: float8_e4m3fn [N, K]; w_scales, biases: float32 [N];
    act_invs: float32 [N] of the three hidden layers; final_weight float32 [256], final_bias."""

    weights: list[torch.Tensor]
    w_scales: list[torch.Tensor]
    biases: list[torch.Tensor]
    act_invs: list[torch.Tensor]
    final_weight: torch.Tensor
    final_bias: float


def fp8_top(qm: QuantizedDLRM) -> Fp8Top:
    """The int8 recipe's top MLP with its weights read as e4m3 (module docstring)."""
    return Fp8Top([to_e4m3(layer.weight) for layer in qm.top], [layer.w_scale.float() for layer in qm.top],
                  [layer.bias.float() for layer in qm.top], [layer.act_inv for layer in qm.top[:-1]],
                  qm.final_weight.float(), float(qm.final_bias))


def emulate_top_fp8(top: Fp8Top, x: torch.Tensor) -> torch.Tensor:
    """x: float8_e4m3fn [B, 512] (the top input) -> click probability float32 [B], in fp32 on the CPU. The GPU
    adds the products in another order (and Hopper's fp8 MMA keeps fewer accumulator bits), so kernels match
    this up to one e4m3 step in an activation and about 1e-3 in a probability."""
    h = x.float()
    for w, s, b, a in zip(top.weights, top.w_scales, top.biases, top.act_invs):
        h = to_e4m3(torch.relu((h @ w.float().T) * s + b) * a).float()
    hidden = torch.relu((h @ top.weights[-1].float().T) * top.w_scales[-1] + top.biases[-1])
    return torch.sigmoid(hidden @ top.final_weight + top.final_bias)
