"""The native kernel library (csrc/*.cu, sm_90a), loaded with ctypes: CUTLASS top-MLP GEMMs, a CUDA bottom MLP
and a CUDA gather + interaction.

Why CUDA here: the Triton GEMMs (top_mlp.py) stream every operand tile from L2 once per SM. Hopper's answer is a
thread-block cluster whose TMA loads multicast one tile into two SMs' shared memory, plus warp-specialized
producer / consumer warpgroups; Triton 3.6 has no multicast and no cluster launch for `tl.dot` kernels. CUTLASS 3
has both. The hidden layers keep Triton's folded epilogue (requant(relu(acc * alpha + bias)), alpha and bias per
output column) and give the same bytes; the final layer does the 256 -> 1 dot in its epilogue
(docs/architecture.md has the measured gains). `interaction()` runs csrc/interaction_mma.cu (interaction.py says
when the engine uses it), `bottom_mlp()` csrc/bottom_mlp_wgmma.cu (bottom_mlp.py).

The library is built by `make kernels` (nvcc for sm_90a and the nvidia-cutlass headers) into
build/kernels/libdlrm_kernels.so, or named by $DLRM_KERNELS_LIB. Nothing here loads it until asked.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

from dlrm_bench.errors import UserError
from dlrm_bench.settings import GEMM_VARIANTS

LIBRARY_ENV = "DLRM_KERNELS_LIB"
DEFAULT_LIBRARY = Path(__file__).resolve().parents[4] / "build" / "kernels" / "libdlrm_kernels.so"

VARIANTS = {name: index for index, name in enumerate(GEMM_VARIANTS)}
"""Hidden-layer kernels by name -> index in the library (csrc/top_gemm_cutlass.cu): 128 x 128 tiles, clusters of
1 x 2 CTAs (two CTAs of neighbouring N tiles receive one A tile by multicast), two consumer warpgroups taking turns
("pingpong": one's epilogue beside the other's MMAs). "_fma": the epilogue as one multiply-add per element,
relu(fma(acc, alpha, bias)), instead of CUTLASS's linear combination (two FFMA in the SASS); the same bytes.
"_smemrows_e64x128": alpha and bias held whole in shared memory (csrc/whole_row_broadcast.h) instead of fetched
at every tile, and 64 x 128 epilogue subtiles instead of 64 x 64. "_permuted": no shared memory in the epilogue;
each thread stores its int8 values from registers, 16 bytes at a time, which puts the columns of each 128-column
tile in an order of its own (physical_column_order; csrc/permuted_store_epilogue.h); the next layer reads them in
that order (TopMLP reorders its weight's K columns). N must be a multiple of 128. "64x256_c2x1" / "64x256_c1x2":
64 x 256 tiles (one m64n256 wgmma per K step), clusters sharing the B tile (two neighbouring M tiles) or the A
tile ("_e64x256": the whole tile as one epilogue subtile); "128x128_k256": 256 of K per pipeline stage. The
first two are built by default (the configs use them); the others, `make kernels GEMM_VARIANTS=all`."""
BASELINE_VARIANTS = ("128x128_c1x2_pingpong_fma", "128x128_c1x2_pingpong")
"""The variants that go with the final layer whose vectors are fetched per tile (their own baseline)."""

TILE_COLUMNS = 128
"""Columns per tile of the "_permuted" variant's column order."""


def stores_permuted(variant: str) -> bool:
    """Whether hidden-layer `variant` writes its output columns in physical_column_order."""
    return variant.endswith("_permuted")


@functools.lru_cache(maxsize=None)
def physical_column_order(n: int) -> torch.Tensor:
    """int64 [n]: the logical column that a "_permuted" variant stores at each physical column of an [M, n] output
    (stored[:, p] = logical[:, order[p]]). Within each 128-column tile, logical c = 8 (8 h + j) + 2 q + k lands at
    p = 64 h + 16 q + 2 j + k: lane quarter q of a wgmma accumulator holds columns 2 q, 2 q + 1 of each group of 8,
    and this makes a thread's 16 values of a half-tile row neighbours. Computed once per n (the engine asks at every
    layer call): treat the tensor as read-only."""
    if n % TILE_COLUMNS:
        raise ValueError(f"a permuted-store layer needs a multiple of {TILE_COLUMNS} columns, got {n}")
    p = torch.arange(TILE_COLUMNS)
    h, q, j, k = p // 64, (p % 64) // 16, (p % 16) // 2, p % 2
    within = 8 * (8 * h + j) + 2 * q + k
    return (torch.arange(0, n, TILE_COLUMNS)[:, None] + within[None, :]).reshape(-1)


def final_layer_variant(variant: str) -> int:
    """The final layer's kernel (csrc/final_layer_cutlass.cu) that goes with the hidden layers' `variant`: 0 the
    vectors held whole in shared memory with 64 x 128 subtiles, 1 fetched per tile (the baseline variants')."""
    return 1 if variant in BASELINE_VARIANTS else 0


_ERRORS = {-1: "variant not built into this library (`make kernels GEMM_VARIANTS=all` builds every one)",
           1: "shape or alignment not supported (rows must be 16-byte aligned; the \"_smemrows\" variants take N <= "
              "1024, their final layer N <= 256; the \"_permuted\" variant a multiple of 128)",
           2: "workspace too small", 3: "initialize failed (TMA descriptors)", 4: "launch failed",
           5: "CUDA error after the launch", 6: "cannot select the tensors' device"}


class KernelsUnavailable(UserError):
    """The library is missing or cannot be loaded (no GPU build here)."""


def library_path() -> Path:
    return Path(os.environ.get(LIBRARY_ENV, DEFAULT_LIBRARY))


def _bind(lib: ctypes.CDLL) -> None:
    """Argument and result types of the library's C functions."""
    ptr, i32, i64, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong, ctypes.c_size_t
    signatures = {
        "dlrm_top_gemm_run": (i32, [i32, ptr, ptr, ptr, ptr, ptr] + [i32] * 8 + [ptr, size, ptr]),
        "dlrm_top_gemm_workspace": (size, [i32] * 5),
        "dlrm_top_gemm_has_variant": (i32, [i32]),
        "dlrm_final_layer_run": (i32, [i32] + [ptr] * 6 + [i32] * 7 + [ptr, size, ptr]),
        "dlrm_final_layer_workspace": (size, [i32] * 5),
        "dlrm_interaction_run": (i32, [ptr, ptr, i64, i32, ptr, ptr, ptr, ptr, i64, i32, i32, ptr]),
        "dlrm_bottom_mlp_image_bytes": (i32, []),
        "dlrm_bottom_mlp_run": (i32, [ptr, ptr, i64, i32, i32, ptr, ptr, i64, i32, i32, ptr]),
    }
    for name, (result, arguments) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = result, arguments


class KernelLibrary:
    """The loaded library; call it to run one hidden layer on the current CUDA stream."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or library_path()
        if not path.is_file():
            raise KernelsUnavailable(f"{path}: no native kernel library (build it with `make kernels` "
                                     f"on a machine with nvcc, or set ${LIBRARY_ENV})")
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise KernelsUnavailable(f"{path}: cannot load: {exc}") from exc
        if not hasattr(lib, "dlrm_top_gemm_has_variant"):
            raise KernelsUnavailable(f"{path}: built by an older version of dlrm-bench (its kernels are numbered "
                                     f"otherwise); rebuild it with `make kernels`")
        self.path = path
        _bind(lib)
        self._lib = lib
        self._workspace: dict[torch.device, torch.Tensor] = {}
        self._retired: list[torch.Tensor] = []

    def has_variant(self, variant: str) -> bool:
        """Whether the hidden-layer kernel `variant` (VARIANTS) is built into this library."""
        return bool(self._lib.dlrm_top_gemm_has_variant(VARIANTS[variant]))

    def _workspace_for(self, need: int, device: torch.device) -> torch.Tensor:
        """A device buffer of at least `need` bytes (one per device, grown when asked for more)."""
        ws = self._workspace.get(device)
        if ws is None or ws.numel() < need:
            if ws is not None:
                self._retired.append(ws)  # CUDA graphs captured with it may still replay: never freed
            ws = torch.empty(max(need, 256), dtype=torch.uint8, device=device)
            self._workspace[device] = ws
        return ws

    def __call__(self, variant: str, x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, alpha: torch.Tensor,
                 bias: torch.Tensor, m: int, sm_count: int) -> None:
        """out[:m] int8 [m, N] = requant(relu(x[:m] @ w.T * alpha + bias)); x int8 [>= m, K], w int8 [N, K],
        alpha / bias fp32 [N]; rows of x, w and out 16-byte aligned, unit column stride."""
        index = VARIANTS[variant]
        n, k = w.shape
        ws = self._workspace_for(int(self._lib.dlrm_top_gemm_workspace(index, m, n, k, sm_count)), x.device)
        stream = torch.cuda.current_stream(x.device).cuda_stream
        code = self._lib.dlrm_top_gemm_run(index, x.data_ptr(), w.data_ptr(), out.data_ptr(), alpha.data_ptr(),
                                           bias.data_ptr(), m, n, k, x.stride(0), w.stride(0), out.stride(0),
                                           sm_count, x.device.index, ws.data_ptr(), ws.numel(), stream)
        _check(code, f"CUTLASS top GEMM {variant} on [{m}, {k}] x [{n}, {k}]")

    def final_layer(self, x: torch.Tensor, w: torch.Tensor, z: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor, final_w: torch.Tensor, m: int, sm_count: int, variant: str = "") -> None:
        """z[:m] fp32 = relu(x[:m] @ w.T * w_scale + bias) @ final_w (csrc/final_layer_cutlass.cu: 128 x 128
        tiles, c1x2 pingpong, the row sums added atomically onto zeros); x int8 [>= m, K], w int8 [N, K], w_scale /
        bias / final_w fp32 [N]. variant: the hidden layers' (final_layer_variant picks the kernel that goes with
        it). The last bias and the sigmoid are the caller's."""
        n, k = w.shape
        index = final_layer_variant(variant)
        ws = self._workspace_for(int(self._lib.dlrm_final_layer_workspace(index, m, n, k, sm_count)), x.device)
        stream = torch.cuda.current_stream(x.device).cuda_stream
        code = self._lib.dlrm_final_layer_run(index, x.data_ptr(), w.data_ptr(), z.data_ptr(),
                                              w_scale.data_ptr(), bias.data_ptr(), final_w.data_ptr(), m, n, k,
                                              x.stride(0), w.stride(0), sm_count, x.device.index, ws.data_ptr(),
                                              ws.numel(), stream)
        _check(code, f"CUTLASS final layer on [{m}, {k}] x [{n}, {k}]")

    def bottom_mlp(self, numeric: torch.Tensor, rows: torch.Tensor | None, num_pairs: int, image: torch.Tensor,
                   out: torch.Tensor, sm_count: int) -> None:
        """The bottom MLP (csrc/bottom_mlp_wgmma.cu) on the current stream: numeric int8 [*, 13 or 16]; rows int64
        [num_pairs] (rows of numeric) or None; image uint8, bottom_mlp.wgmma_image; out int8 [>= num_pairs, *]
        receives the dense vector in columns 0..127."""
        stream = torch.cuda.current_stream(out.device).cuda_stream
        code = self._lib.dlrm_bottom_mlp_run(numeric.data_ptr(), rows.data_ptr() if rows is not None else None,
                                             numeric.stride(0), min(numeric.shape[1], 16), num_pairs,
                                             image.data_ptr(), out.data_ptr(), out.stride(0), sm_count,
                                             out.device.index, stream)
        _check(code, f"CUDA bottom MLP on {num_pairs} pairs")

    def interaction(self, categorical: torch.Tensor, rows: torch.Tensor | None, num_pairs: int,
                    tables: torch.Tensor, offsets: torch.Tensor, mult: torch.Tensor, top_in: torch.Tensor,
                    pairs_per_warp: int) -> None:
        """The gather + interaction in the paired layout (csrc/interaction_mma.cu), on the current stream:
        categorical int32 [*, >= 26] ids; rows int64 [num_pairs] (rows of categorical) or None; tables int8
        [R, 128]; offsets int64 [26]; mult fp32 [32, 32]; top_in int8 [>= num_pairs, 512] with the dense vector
        in columns 0..127 (16-byte aligned rows); columns 128..491 are written."""
        if categorical.dtype != torch.int32 or (rows is not None and rows.dtype != torch.int64):
            raise ValueError(f"CUDA interaction: ids must be int32 and rows int64, got {categorical.dtype} and "
                             f"{None if rows is None else rows.dtype}")
        stream = torch.cuda.current_stream(top_in.device).cuda_stream
        code = self._lib.dlrm_interaction_run(
            categorical.data_ptr(), rows.data_ptr() if rows is not None else None, categorical.stride(0),
            num_pairs, tables.data_ptr(), offsets.data_ptr(), mult.data_ptr(), top_in.data_ptr(),
            top_in.stride(0), pairs_per_warp, top_in.device.index, stream)
        _check(code, f"CUDA interaction on {num_pairs} pairs")


def _check(code: int, what: str) -> None:
    if code:
        raise RuntimeError(f"{what}: {_ERRORS.get(code, f'error {code}')}")


_LOADED: KernelLibrary | None = None


def hopper_kernel_library(device: torch.device, what: str) -> KernelLibrary:
    """The loaded library, for the CUDA `what` kernel on `device`: KernelsUnavailable where the GPU is not a Hopper
    (the library is built for sm_90a)."""
    capability = torch.cuda.get_device_capability(device)
    if capability != (9, 0):
        raise KernelsUnavailable(f"the CUDA {what} kernel is built for Hopper (sm_90a); this GPU is sm_"
                                 f"{capability[0]}{capability[1]}")
    return kernel_library()


def kernel_library() -> KernelLibrary:
    """The library, loaded once per process."""
    global _LOADED
    if _LOADED is None:
        _LOADED = KernelLibrary()
    return _LOADED
