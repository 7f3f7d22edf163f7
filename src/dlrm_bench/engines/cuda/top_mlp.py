"""Top MLP as int8 GEMMs with bias, ReLU and requantization fused into the epilogue; the last two layers fused.

Layers 479(512) -> 1024 -> 1024 -> 512 write int8 activations (per-channel scales, quant/recipe.py). The layer
512 -> 256 keeps its ReLU output in fp32 registers and finishes the model in its epilogue: the 256 -> 1 dot
product, the bias and the sigmoid, writing one fp32 probability per pair; its tile spans all 256 columns.

On Hopper the hidden layers run a persistent GEMM whose operands arrive by TMA, two programs per SM (one's
epilogue runs while the other's tensor-core main loop does), with the requantization folded into one multiply-add
per element and TMA stores. Elsewhere (and in Triton's interpreter) they run one program per tile with pointer
loads. Any layer can instead run a CUTLASS kernel of the native library (kernel_library.py; GemmConfig.cutlass, the
engine's `top_gemm` / `cutlass_final_layer` settings). The first layer's weight columns follow the interaction's
paired layout (interaction.permute_top_weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlrm_bench.engines.cuda.triton_env import INTERPRETED, clamped_to_int8, requantize_relu, tl, triton
from dlrm_bench.engines.cuda.interaction import permute_top_weight
from dlrm_bench.quant.recipe import QuantizedDLRM


@triton.jit
def _epilogue(acc, m, n, M, c_ptr, stride_cm, wscale_ptr, bias_ptr, act_ptr, final_w_ptr, final_b,
              FINAL: tl.constexpr):
    """int32 tile [BLOCK_M, BLOCK_N] of rows m, columns n -> scale, bias, ReLU; then requantized int8 stores, or
    (FINAL) the 256 -> 1 dot, bias and sigmoid: one fp32 probability per row."""
    m_mask = m < M
    m64 = m.to(tl.int64)
    y = acc.to(tl.float32) * tl.load(wscale_ptr + n)[None, :] + tl.load(bias_ptr + n)[None, :]
    if FINAL:
        y = tl.maximum(y, 0.0)
        z = tl.sum(y * tl.load(final_w_ptr + n)[None, :], axis=1) + final_b
        tl.store(c_ptr + m64, 1.0 / (1.0 + tl.exp(-z)), mask=m_mask)
    else:
        q = requantize_relu(y, tl.load(act_ptr + n)[None, :])
        tl.store(c_ptr + m64[:, None] * stride_cm + n[None, :], q, mask=m_mask[:, None])


@triton.jit(do_not_specialize=["M"])
def _linear_int8_kernel(a_ptr, b_ptr, c_ptr, M, N: tl.constexpr, K: tl.constexpr, stride_am, stride_bn, stride_cm,
                        wscale_ptr, bias_ptr, act_ptr, final_w_ptr, final_b,
                        FINAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """a: int8 [M, K] (row stride stride_am); b: int8 [N, K] (row stride stride_bn, K-major as Hopper's 8-bit
    MMA wants both operands); K % BLOCK_K == 0,
    N % BLOCK_N == 0. Not FINAL: c int8 [M, N] = requant(relu(a @ b * wscale + bias), act).
    act: 1 / activation scale per channel. FINAL (BLOCK_N == N): c fp32 [M] = sigmoid(relu(a @ b * wscale + bias) @ final_w + final_b)."""
    pid = tl.program_id(0)
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = N // BLOCK_N
    group = pid // (GROUP_M * num_n)
    first_m = group * GROUP_M
    rows_in_group = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % rows_in_group
    pid_n = (pid % (GROUP_M * num_n)) // rows_in_group
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k = tl.arange(0, BLOCK_K)
    m_mask = m < M
    m64 = m.to(tl.int64)
    a_ptrs = a_ptr + m64[:, None] * stride_am + k[None, :]
    b_ptrs = b_ptr + n[None, :] * stride_bn + k[:, None]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
    for _ in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs, mask=m_mask[:, None], other=0)
        b = tl.load(b_ptrs)
        acc += tl.dot(a, b, out_dtype=tl.int32)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    _epilogue(acc, m, n, M, c_ptr, stride_cm, wscale_ptr, bias_ptr, act_ptr, final_w_ptr, final_b, FINAL)


@triton.jit(do_not_specialize=["M"])
def _linear_int8_tma_kernel(a_desc, b_desc, c_desc, M, N: tl.constexpr, K: tl.constexpr, mul_ptr, add_ptr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            GROUP_M: tl.constexpr, NUM_PROGRAMS: tl.constexpr):
    """A hidden layer, persistent (NUM_PROGRAMS programs walk the tiles) with operands fetched by the Hopper bulk
    tensor copy engine: a [M, K] blocks [BLOCK_M, BLOCK_K], b [N, K] blocks [BLOCK_N, BLOCK_K] (rows past M read as
    zeros); c int8 [M, N] = clamp(round(acc * mul + add), 0, 127) leaves through c_desc (rows past M clipped by the
    copy engine). mul = w_scale * act_inv, add = bias * act_inv: the recipe's requant(relu(acc * w_scale + bias))
    up to float rounding (rarely one int8 step apart)."""
    start = tl.program_id(0)
    num_m = (M + BLOCK_M - 1) // BLOCK_M
    num_n = N // BLOCK_N
    for tile in tl.range(start, num_m * num_n, NUM_PROGRAMS, flatten=True):
        group = tile // (GROUP_M * num_n)
        first_m = group * GROUP_M
        rows_in_group = tl.minimum(num_m - first_m, GROUP_M)
        off_m = (first_m + (tile % (GROUP_M * num_n)) % rows_in_group) * BLOCK_M
        off_n = ((tile % (GROUP_M * num_n)) // rows_in_group) * BLOCK_N
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
        for kk in range(0, K, BLOCK_K):
            acc = tl.dot(a_desc.load([off_m, kk]), b_desc.load([off_n, kk]).T, acc, out_dtype=tl.int32)
        n = off_n + tl.arange(0, BLOCK_N)
        y = acc.to(tl.float32) * tl.load(mul_ptr + n)[None, :] + tl.load(add_ptr + n)[None, :]
        c_desc.store([off_m, off_n], clamped_to_int8(tl.minimum(tl.maximum(y, 0.0), 127.0)))


@triton.jit(do_not_specialize=["M"])
def _sigmoid_in_place_kernel(z_ptr, final_b, M, BLOCK: tl.constexpr):
    """z fp32 [M] -> sigmoid(z + final_b), in place (after the CUTLASS final layer's row sums)."""
    m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    z = tl.load(z_ptr + m, mask=m < M, other=0.0)
    tl.store(z_ptr + m, 1.0 / (1.0 + tl.exp(-(z + final_b))), mask=m < M)


@dataclass
class GemmConfig:
    """One layer's kernel. block_*: tile; group_m: M tiles walked per N column (L2 reuse); tma: the persistent TMA
    kernel with the folded epilogue (hidden layers on Hopper; else one program per tile with pointer loads);
    cutlass: the layer runs on the native library instead (a settings.GEMM_VARIANTS name; the tile fields then only
    serve the divisibility check; on the final layer any non-empty value runs the CUTLASS final-layer kernel that
    goes with that variant)."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
    tma: bool = False
    cutlass: str = ""


PROGRAMS_PER_SM = 2
"""Persistent programs per SM of the TMA kernel: one's epilogue overlaps the other's main loop."""


def default_config(n: int, final: bool, tma: bool) -> GemmConfig:
    """Tile sizes per layer shape (tuned on an H100; small in the interpreter). Hidden layers: 128 x 128 tiles,
    the TMA kernel where `tma`. Final layer: its tile spans all 256 columns."""
    if INTERPRETED:
        return GemmConfig(16, n if final else 64, 64, 4, 4, 1)
    if final:
        return GemmConfig(128, n, 128, 8, 8, 3)
    return GemmConfig(128, 128, 128, 8, 4, 3, tma=tma)


class TopMLP:
    """Device weights of the four int8 top layers (+ the fp32 final vector) and the launchers."""

    def __init__(self, qm: QuantizedDLRM, device: torch.device, configs: list[GemmConfig] | None = None) -> None:
        self.w = [layer.weight.contiguous().to(device) for layer in qm.top]  # int8 [N, K]
        self.w[0] = permute_top_weight(self.w[0]).contiguous()  # the interaction's paired columns
        self.s = [layer.w_scale.float().to(device) for layer in qm.top]
        self.b = [layer.bias.float().to(device) for layer in qm.top]
        self.a = [layer.act_inv.to(device) for layer in qm.top[:-1]]
        self.folded_mul = [(layer.w_scale.float() * layer.act_inv).to(device) for layer in qm.top[:-1]]
        self.folded_add = [(layer.bias.float() * layer.act_inv).to(device) for layer in qm.top[:-1]]
        self.final_w = qm.final_weight.float().to(device)
        self.final_b = float(qm.final_bias)
        # programs of a persistent launch: the GPU's SM count, looked up once (3 in the interpreter, so programs loop)
        self.num_sms = 3 if INTERPRETED else torch.cuda.get_device_properties(self.final_w.device).multi_processor_count
        last = len(self.w) - 1
        tma = not INTERPRETED and torch.cuda.get_device_capability(self.final_w.device)[0] >= 9
        self.configs = configs or [default_config(w.shape[0], i == last, tma) for i, w in enumerate(self.w)]
        # weights with K columns in a previous layer's stored order, and epilogue vectors in a layer's own, by layer
        self._reordered_weight: dict[int, torch.Tensor] = {}
        self._reordered_vectors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def widths(self) -> list[int]:
        """Output width of each int8 layer (the activation buffers the engine allocates)."""
        return [w.shape[0] for w in self.w[:-1]]

    def stored_order(self, i: int) -> torch.Tensor | None:
        """The column order in which hidden layer i stores its output (kernel_library.physical_column_order: stored
        column p holds logical column order[p]), or None for the natural order. A "_permuted" CUTLASS variant has
        one; every other kernel stores columns in order."""
        from dlrm_bench.engines.cuda.kernel_library import physical_column_order, stores_permuted

        if i < 0 or i >= len(self.w) - 1 or not stores_permuted(self.configs[i].cutlass):
            return None
        return physical_column_order(self.w[i].shape[0])

    def input_weight(self, i: int) -> torch.Tensor:
        """Layer i's weight int8 [N, K] with its K columns in the order layer i - 1 stores them (reordered once,
        then kept)."""
        order = self.stored_order(i - 1)
        if order is None:
            return self.w[i]
        if i not in self._reordered_weight:
            self._reordered_weight[i] = self.w[i][:, order.to(self.w[i].device)].contiguous()
        return self._reordered_weight[i]

    def prepare_column_orders(self) -> None:
        """Reorder now what the layers' stored column orders need (input_weight, the epilogue vectors), so that
        nothing is allocated or gathered later inside a CUDA-graph capture."""
        for i in range(len(self.w)):
            self.input_weight(i)
            if i < len(self.w) - 1:
                self._epilogue_vectors(i)

    def _epilogue_vectors(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden layer i's folded multiplier and offset, in the order it stores its columns."""
        order = self.stored_order(i)
        if order is None:
            return self.folded_mul[i], self.folded_add[i]
        if i not in self._reordered_vectors:
            order = order.to(self.folded_mul[i].device)
            self._reordered_vectors[i] = (self.folded_mul[i][order].contiguous(),
                                          self.folded_add[i][order].contiguous())
        return self._reordered_vectors[i]

    def layer(self, i: int, x: torch.Tensor, out: torch.Tensor, num_pairs: int) -> None:
        """Layer i on x int8 [>= num_pairs, K] (its columns in the order layer i - 1 stores them) into out: int8
        [>= num_pairs, N] for a hidden layer (in stored_order(i)), fp32 probabilities for the last."""
        w, cfg = self.input_weight(i), self.configs[i]
        n, k = w.shape
        if n % cfg.block_n or k % cfg.block_k:
            raise ValueError(f"top layer {i}: a {cfg.block_n} x {cfg.block_k} tile must divide its weight "
                             f"[N, K] = [{n}, {k}]")
        final = i == len(self.w) - 1
        if cfg.cutlass:
            self._layer_cutlass(i, x, w, out, num_pairs, cfg.cutlass, final)
            return
        if cfg.tma and not final:
            self._layer_tma(i, x, w, out, num_pairs, cfg)
            return
        grid = (triton.cdiv(num_pairs, cfg.block_m) * (n // cfg.block_n),)
        _linear_int8_kernel[grid](
            x, w, out, num_pairs, n, k, x.stride(0), w.stride(0), out.stride(0) if not final else 1,
            self.s[i], self.b[i], self.a[i] if not final else self.s[i], self.final_w, self.final_b,
            FINAL=final, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def _layer_cutlass(self, i: int, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, num_pairs: int,
                       variant: str, final: bool) -> None:
        """Layer i (weight w, input_weight(i)) on the CUTLASS library: a hidden layer with the folded epilogue; the
        final layer's row sums, then the last bias and the sigmoid in place (one small Triton kernel)."""
        from dlrm_bench.engines.cuda.kernel_library import kernel_library

        if not final:
            mul, add = self._epilogue_vectors(i)
            kernel_library()(variant, x, w, out, mul, add, num_pairs, self.num_sms)
            return
        kernel_library().final_layer(x, w, out, self.s[i], self.b[i], self.final_w, num_pairs, self.num_sms,
                                       variant)
        _sigmoid_in_place_kernel[(triton.cdiv(num_pairs, 1024),)](out, self.final_b, num_pairs, BLOCK=1024)

    def _layer_tma(self, i: int, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, num_pairs: int,
                   cfg: GemmConfig) -> None:
        """Hidden layer i on the persistent TMA kernel (folded epilogue, TMA stores)."""
        from triton.tools.tensor_descriptor import TensorDescriptor

        n, k = w.shape
        a_desc = TensorDescriptor(x, [num_pairs, k], [x.stride(0), 1], [cfg.block_m, cfg.block_k])
        b_desc = TensorDescriptor.from_tensor(w, [cfg.block_n, cfg.block_k])
        c_desc = TensorDescriptor(out, [num_pairs, n], [out.stride(0), 1], [cfg.block_m, cfg.block_n])
        programs = self.num_sms * PROGRAMS_PER_SM  # a constant stride: no recompiles for small batches
        grid = (min(programs, triton.cdiv(num_pairs, cfg.block_m) * (n // cfg.block_n)),)
        _linear_int8_tma_kernel[grid](
            a_desc, b_desc, c_desc, num_pairs, n, k, self.folded_mul[i], self.folded_add[i],
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
            NUM_PROGRAMS=programs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    def __call__(self, top_in: torch.Tensor, buffers: list[torch.Tensor], probs: torch.Tensor,
                 num_pairs: int) -> None:
        """top_in: int8 [>= num_pairs, 512]; buffers: int8 [>= num_pairs, width] per hidden layer;
        probs: fp32 [>= num_pairs] receives the click probabilities."""
        x = top_in
        for i, buf in enumerate(buffers):
            self.layer(i, x, buf, num_pairs)
            x = buf
        self.layer(len(self.w) - 1, x, probs, num_pairs)


def use_cutlass_hidden_layers(top: TopMLP, variant: str, final_layer: bool = False, first_layer: str = "") -> None:
    """Run `top`'s hidden layers (with final_layer, its last layer too) on the CUTLASS kernel `variant`
    (kernel_library.VARIANTS), the first hidden layer on `first_layer` where given. Loads the library now:
    KernelsUnavailable (with the path and how to build it, or the GPU that cannot run it) at start, not mid-run."""
    from dlrm_bench.engines.cuda.kernel_library import VARIANTS, KernelsUnavailable, kernel_library

    for setting, name in (("top_gemm", variant), ("top_gemm_first_layer", first_layer or variant)):
        if name not in VARIANTS:
            raise ValueError(f"{setting} {name!r}: expected triton or one of {', '.join(VARIANTS)}")
    capability = torch.cuda.get_device_capability(top.final_w.device)
    if capability != (9, 0):
        raise KernelsUnavailable(f"the CUTLASS kernels are built for Hopper (sm_90a); this GPU is sm_"
                                 f"{capability[0]}{capability[1]}")
    library = kernel_library()
    missing = sorted({variant, first_layer or variant} - {v for v in VARIANTS if library.has_variant(v)})
    if missing:
        raise KernelsUnavailable(f"{library.path}: {', '.join(missing)} not built into the library (`make kernels "
                                 f"GEMM_VARIANTS=all` builds every variant)")
    for cfg in top.configs[:-1]:
        cfg.cutlass = variant
    if final_layer:
        top.configs[-1].cutlass = variant
    if first_layer:
        top.configs[0].cutlass = first_layer
    top.prepare_column_orders()
