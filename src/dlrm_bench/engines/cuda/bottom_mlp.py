"""Fused int8 bottom MLP (13 -> 512 -> 256 -> 128, ReLU each), intermediates kept on chip.

One program handles BLOCK_M pairs: layer 1 is computed CHUNK output channels at a time and immediately consumed
by layer 2's accumulation, so the 512-wide hidden layer never leaves the SM; layer 3 follows on the 256-wide
result. The int8 output (one scale for all 128 channels, see quant/recipe.py) is written straight into columns
0..127 of the top-MLP input buffer, where the interaction kernel reads it.

Layer 1 (K = 13) has 512 outputs per pair for 13 multiply-adds each, so its cost is the epilogue, and most of that
was the int32 -> fp32 conversion of each accumulator (I2FP, on the SM's slow conversion pipe). By default
(`layer1_fp16`) it multiplies on the fp16 tensor cores instead: int8 values are exact in fp16, each product is
exact, and every partial sum is an integer below 13 * 127 * 127 < 2^24, so the fp32 accumulator holds exactly the
int32 result, already converted. Same outputs bit for bit, no conversion instruction.

`kernel="cuda"` runs the CUDA kernel of the CUTLASS library instead (csrc/bottom_mlp_wgmma.cu, Hopper only): one
persistent CTA per SM holds all the weights in shared memory, and each layer's accumulator fragment is the next
layer's register operand. The same bytes as the Triton kernel. `wgmma_image` lays the weights out for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dlrm_bench.engines.cuda.triton_env import requantize_relu, tl, triton
from dlrm_bench.errors import UserError
from dlrm_bench.quant.recipe import QuantizedDLRM

if TYPE_CHECKING:
    from dlrm_bench.engines.cuda.kernel_library import KernelLibrary

K1_PAD = 32
"""Layer-1 input columns in the kernel (13 real, zero-padded: int8 MMA wants K >= 32)."""
KERNELS = ("triton", "cuda")
"""Who runs the bottom MLP: the Triton kernel below, or the CUDA one (csrc/bottom_mlp_wgmma.cu)."""


def _k_permutation() -> torch.Tensor:
    """int64 [32]: the input column, within its 32-column block, that position k of a block of the CUDA kernel's
    weights holds. The kernel packs lane t's accumulator columns 8j + 2t, 8j + 2t + 1 of groups j = 2h, 2h + 1 as
    the A operand's k = 16h + 4t .. 16h + 4t + 3 (csrc/bottom_mlp_wgmma.cu)."""
    k = torch.arange(32)
    half, t, i = k // 16, (k % 16) // 4, k % 4
    return 8 * (2 * half + i // 2) + 2 * t + i % 2


K_PERMUTATION = _k_permutation()


def _core_matrix_offsets(n: int, k_bytes: int) -> torch.Tensor:
    """int64 [n, k_bytes]: the byte offset of element (row, byte) of a K-major operand in the CUDA kernel's shared
    memory: 32-byte k blocks one after the other, each n / 8 x 2 core matrices of 8 rows x 16 bytes (128 bytes
    each; leading byte offset 128, stride byte offset 256)."""
    row = torch.arange(n)[:, None]
    byte = torch.arange(k_bytes)[None, :]
    return (byte // 32) * (n * 32) + (row // 8) * 256 + ((byte % 32) // 16) * 128 + (row % 8) * 16 + byte % 16


def _laid_out(weight_bytes: torch.Tensor) -> torch.Tensor:
    """uint8 [n, k_bytes] -> uint8 [n * k_bytes] in the kernel's shared-memory order."""
    n, k_bytes = weight_bytes.shape
    out = torch.empty(n * k_bytes, dtype=torch.uint8)
    out[_core_matrix_offsets(n, k_bytes).reshape(-1)] = weight_bytes.reshape(-1)
    return out


def _permuted(weight: torch.Tensor) -> torch.Tensor:
    """int8 [n, k] with each 32-column block's columns in K_PERMUTATION order."""
    k = weight.shape[1]
    columns = (torch.arange(k) // 32) * 32 + K_PERMUTATION.repeat(k // 32)
    return weight[:, columns]


def wgmma_image(qm: QuantizedDLRM) -> torch.Tensor:
    """uint8 [190,976]: what the CUDA bottom-MLP kernel copies into shared memory: layer 1's weight as fp16 [512, 16]
    (13 used), layers 2 and 3's int8 weights with permuted columns, each in the core-matrix order, then the fp32
    w_scale, bias and act_inv of layer 1 (512 each), 2 (256) and 3 (128)."""
    l1, l2, l3 = qm.bottom
    w1 = torch.zeros(512, 16, dtype=torch.float16)
    w1[:, : l1.weight.shape[1]] = l1.weight.to(torch.float16)
    parts = [_laid_out(w1.view(torch.uint8)), _laid_out(_permuted(l2.weight).view(torch.uint8)),
             _laid_out(_permuted(l3.weight).view(torch.uint8))]
    for layer in (l1, l2, l3):
        params = torch.cat([layer.w_scale.float(), layer.bias.float(), layer.act_inv.float()])
        parts.append(params.view(torch.uint8))
    return torch.cat(parts)


@triton.jit(do_not_specialize=["num_pairs"], do_not_specialize_on_alignment=["x_ptr"])
def _bottom_mlp_kernel(x_ptr, rows_ptr, x_stride, num_pairs,
                       w1_ptr, s1_ptr, b1_ptr, a1_ptr,
                       w2_ptr, s2_ptr, b2_ptr, a2_ptr,
                       w3_ptr, s3_ptr, b3_ptr, a3_ptr,
                       out_ptr, out_stride,
                       K_IN: tl.constexpr, HAS_ROWS: tl.constexpr, BLOCK_M: tl.constexpr, CHUNK: tl.constexpr,
                       NUM_STAGES: tl.constexpr, L1_FP16: tl.constexpr = False):
    """x: int8 [*, x_stride] (13 used); rows: int64 [num_pairs] (if HAS_ROWS) picks x's rows;
    w1: int8 [512, 32] (L1_FP16: fp16 holding the same integers), w2: int8 [256, 512], w3: int8 [128, 256]
    ([N, K]: K-major, as Hopper's 8-bit MMA wants its B operand); s*, b*: fp32 per channel; a*: fp32 per
    channel, 1 / activation scale; out: int8 [num_pairs, out_stride], columns 0..127 written. NUM_STAGES > 1
    software-pipelines the chunk loop (the next chunk's weights load while this one multiplies)."""
    pid = tl.program_id(0)
    p = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    pmask = p < num_pairs
    if HAS_ROWS:
        r = tl.load(rows_ptr + p, mask=pmask, other=0)
    else:
        r = p.to(tl.int64)
    k = tl.arange(0, 32)
    x = tl.load(x_ptr + r[:, None] * x_stride + k[None, :], mask=pmask[:, None] & (k[None, :] < K_IN), other=0)
    if L1_FP16:
        x = x.to(tl.float16)  # exact: |x| <= 127
    n2 = tl.arange(0, 256)
    acc2 = tl.zeros([BLOCK_M, 256], dtype=tl.int32)
    for c in tl.range(0, 512, CHUNK, num_stages=NUM_STAGES):
        n1 = c + tl.arange(0, CHUNK)
        w1 = tl.load(w1_ptr + n1[None, :] * 32 + k[:, None])
        if L1_FP16:
            acc1 = tl.dot(x, w1, out_dtype=tl.float32)  # exact integers (module docstring)
        else:
            acc1 = tl.dot(x, w1, out_dtype=tl.int32).to(tl.float32)
        h1 = acc1 * tl.load(s1_ptr + n1)[None, :] + tl.load(b1_ptr + n1)[None, :]
        q1 = requantize_relu(h1, tl.load(a1_ptr + n1)[None, :])
        w2 = tl.load(w2_ptr + n2[None, :] * 512 + n1[:, None])
        acc2 += tl.dot(q1, w2, out_dtype=tl.int32)
    h2 = acc2.to(tl.float32) * tl.load(s2_ptr + n2)[None, :] + tl.load(b2_ptr + n2)[None, :]
    q2 = requantize_relu(h2, tl.load(a2_ptr + n2)[None, :])
    n3 = tl.arange(0, 128)
    w3 = tl.load(w3_ptr + n3[None, :] * 256 + n2[:, None])
    h3 = tl.dot(q2, w3, out_dtype=tl.int32).to(tl.float32) * tl.load(s3_ptr + n3)[None, :] \
        + tl.load(b3_ptr + n3)[None, :]
    q3 = requantize_relu(h3, tl.load(a3_ptr + n3)[None, :])
    tl.store(out_ptr + p[:, None].to(tl.int64) * out_stride + n3[None, :], q3, mask=pmask[:, None])


class BottomMLP:
    """Device copies of the bottom layers in the kernel's layout, and the launcher."""

    def __init__(self, qm: QuantizedDLRM, device: torch.device, block_m: int = 64, chunk: int = 128,
                 num_warps: int = 4, num_stages: int = 2, layer1_fp16: bool = True, kernel: str = "triton") -> None:
        """layer1_fp16: layer 1 on the fp16 tensor cores (exact; module docstring), else in int8. kernel: "triton"
        (the tile fields apply) or "cuda" (KernelsUnavailable where the library or a Hopper GPU is missing)."""
        if kernel not in KERNELS:
            raise UserError(f"bottom_kernel '{kernel}': choose one of {', '.join(KERNELS)}")
        self.kernel = kernel
        self.native = self._native_kernel(device) if kernel == "cuda" else None
        self.layer1_fp16 = layer1_fp16
        self.block_m, self.chunk, self.num_warps, self.num_stages = block_m, chunk, num_warps, num_stages
        if self.native is not None:  # the CUDA kernel reads everything from its shared-memory image
            self.image = wgmma_image(qm).to(device)
            self.num_sms = torch.cuda.get_device_properties(device).multi_processor_count
            return
        l1, l2, l3 = qm.bottom
        w1 = torch.zeros(512, K1_PAD, dtype=torch.float16 if layer1_fp16 else torch.int8)
        w1[:, : l1.weight.shape[1]] = l1.weight.to(w1.dtype)
        self.w = [w1.to(device), l2.weight.contiguous().to(device), l3.weight.contiguous().to(device)]
        self.s = [layer.w_scale.float().to(device) for layer in qm.bottom]
        self.b = [layer.bias.float().to(device) for layer in qm.bottom]
        self.a = [layer.act_inv.to(device) for layer in qm.bottom]

    def __call__(self, numeric_int8: torch.Tensor, rows: torch.Tensor | None, num_pairs: int,
                 out: torch.Tensor) -> None:
        """numeric_int8: int8 [N, 13 or 16]; rows: int64 [num_pairs] or None (rows 0..num_pairs-1);
        out: int8 [>= num_pairs, 512], columns 0..127 are written."""
        if self.native is not None:
            if num_pairs > 0:
                self.native.bottom_mlp(numeric_int8, rows, num_pairs, self.image, out, self.num_sms)
            return
        grid = (triton.cdiv(num_pairs, self.block_m),)
        _bottom_mlp_kernel[grid](
            numeric_int8, rows if rows is not None else numeric_int8, numeric_int8.stride(0), num_pairs,
            self.w[0], self.s[0], self.b[0], self.a[0],
            self.w[1], self.s[1], self.b[1], self.a[1],
            self.w[2], self.s[2], self.b[2], self.a[2],
            out, out.stride(0),
            K_IN=min(numeric_int8.shape[1], 16), HAS_ROWS=rows is not None, BLOCK_M=self.block_m,
            CHUNK=self.chunk, NUM_STAGES=self.num_stages, L1_FP16=self.layer1_fp16, num_warps=self.num_warps)

    @staticmethod
    def _native_kernel(device: torch.device) -> "KernelLibrary":
        """The loaded library whose CUDA kernel this bottom MLP runs."""
        from dlrm_bench.engines.cuda.kernel_library import hopper_kernel_library

        return hopper_kernel_library(device, "bottom-MLP")
