"""The top MLP's layers through CUTLASS (csrc/*.cu), loaded with ctypes.

Why CUDA here: the Triton GEMMs (top_mlp.py) stream every operand tile from L2 once per SM. Hopper's answer is a
thread-block cluster whose TMA loads multicast one tile into two SMs' shared memory, plus warp-specialized
producer / consumer warpgroups; Triton 3.6 has no multicast ("NYI: Support multicast") and no cluster launch for
`tl.dot` kernels. CUTLASS 3 has both. The hidden layers keep Triton's folded epilogue (requant(relu(acc * alpha +
bias)), alpha and bias per output column) and give the same bytes; the final layer does the 256 -> 1 dot in its
epilogue. On an H100 they made the top MLP 8-9% cheaper per pair at the power limit (benchmarks/NOTES.md).

The same library holds the CUDA gather + interaction kernel (csrc/interaction_mma.cu, `interaction()` here;
interaction.py says when the engine uses it) and the CUDA bottom MLP (csrc/bottom_mlp_wgmma.cu, `bottom_mlp()`;
bottom_mlp.py).

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

LIBRARY_ENV = "DLRM_KERNELS_LIB"
DEFAULT_LIBRARY = Path(__file__).resolve().parents[4] / "build" / "kernels" / "libdlrm_kernels.so"

VARIANTS = {
    "128x128_c2x1_pingpong": 0,
    "128x128_c1x2_pingpong": 1,
    "128x128_c1x1_pingpong": 2,
    "128x256_c2x1_cooperative": 3,
    "256x128_c1x2_cooperative": 4,
    "128x256_c1x1_cooperative": 5,
    "128x128_c1x4_pingpong": 6,
    "128x128_c2x2_pingpong": 7,
    "128x128k64_c1x2_pingpong": 8,
    "128x128_c1x2_pingpong_fma": 9,
    "128x128_c1x2_pingpong_fma_e64x128": 10,
    "128x128_c1x2_pingpong_fma_smemrows": 11,
    "128x128_c1x2_pingpong_fma_smemrows_e64x128": 12,
    "128x128_c1x2_pingpong_fma_permuted": 13,
}
"""Kernel variants by name -> index in the library: tile M x N (K step 128 unless named), cluster shape (M x N
CTAs: c1x2 = two CTAs of neighbouring N tiles that receive one A tile by multicast), warpgroup schedule
(pingpong: two consumer warpgroups take turns on 128 x 128 tiles, one's epilogue beside the other's MMAs;
cooperative: both share one tile). "_fma": the epilogue as a tree of one multiply-add per element,
relu(fma(acc, alpha, bias)), instead of CUTLASS's linear combination (alpha * acc + (0 * C + bias): two FFMA in the
SASS); the same bytes (csrc/top_gemm_cutlass.cu). "_smemrows": alpha and bias held whole in shared memory, copied
once per consumer warpgroup, where CUTLASS's row broadcast fetches each tile's slice from global memory and waits
at a barrier at every tile (csrc/whole_row_broadcast.h; N <= 1024); the final layer of a "_smemrows" variant holds
its three vectors that way too. "_e64x128": the epilogue converts and stores 64 x 128 subtiles (two per tile)
instead of CUTLASS's 64 x 64 (four); the final layer of a "_smemrows_e64x128" variant walks 64 x 128 subtiles too
(instead of 64 x 32). "_permuted": no shared memory in the epilogue at all; each thread stores its int8 values
straight from registers, 16 bytes at a time, which puts the columns of each 128-column tile in an order of its own
(physical_column_order; csrc/permuted_store_epilogue.h). The next layer reads them in that order (TopMLP reorders
its weight's K columns) and alpha / bias are passed in it. N must be a multiple of 128."""

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


def in_stored_order(x: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """x [rows, N] in logical column order -> stored order `order` (physical_column_order; None: unchanged)."""
    return x if order is None else x[:, order.to(x.device)]


def in_logical_order(stored: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """The inverse of in_stored_order: stored [rows, N] -> logical column order."""
    if order is None:
        return stored
    logical = torch.empty_like(stored)
    logical[:, order.to(stored.device)] = stored
    return logical


def final_layer_variant(variant: str) -> int:
    """The final layer's kernel (csrc/final_layer_cutlass.cu) that goes with the hidden layers' `variant`: 0 the
    vectors fetched per tile, 1 held whole in shared memory ("_smemrows"), 2 held whole with 64 x 128 subtiles
    ("_smemrows_e64x128", and "_permuted")."""
    if stores_permuted(variant):
        return 2
    if "_smemrows" not in variant:
        return 0
    return 2 if "_e64x128" in variant else 1


_ERRORS = {-1: "unknown variant",
           1: "shape or alignment not supported (rows must be 16-byte aligned; the \"_smemrows\" variants take N <= "
              "1024, their final layer N <= 256; the \"_permuted\" variant a multiple of 128)",
           2: "workspace too small", 3: "initialize failed (TMA descriptors)", 4: "launch failed",
           5: "CUDA error after the launch", 6: "cannot select the tensors' device"}


class KernelsUnavailable(UserError):
    """The library is missing or cannot be loaded (no GPU build here)."""


def library_path() -> Path:
    return Path(os.environ.get(LIBRARY_ENV, DEFAULT_LIBRARY))


class KernelLibrary:
    """The loaded library; call it to run one hidden layer on the current CUDA stream."""

    def __init__(self, path: Path | None = None) -> None:
        path = path or library_path()
        if not path.is_file():
            raise KernelsUnavailable(f"{path}: no CUTLASS top-GEMM library (build it with `make kernels` "
                                     f"on a machine with nvcc, or set ${LIBRARY_ENV})")
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise KernelsUnavailable(f"{path}: cannot load: {exc}") from exc
        lib.dlrm_top_gemm_run.restype = ctypes.c_int
        lib.dlrm_top_gemm_run.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                          ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        lib.dlrm_top_gemm_workspace.restype = ctypes.c_size_t
        lib.dlrm_top_gemm_workspace.argtypes = [ctypes.c_int] * 5
        lib.dlrm_final_layer_run.restype = ctypes.c_int
        lib.dlrm_final_layer_run.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 6 + [ctypes.c_int] * 7 + [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        lib.dlrm_final_layer_workspace.restype = ctypes.c_size_t
        lib.dlrm_final_layer_workspace.argtypes = [ctypes.c_int] * 5
        self.path = path
        self.has_interaction = hasattr(lib, "dlrm_interaction_run")  # not in a library built before it
        if self.has_interaction:
            lib.dlrm_interaction_run.restype = ctypes.c_int
            lib.dlrm_interaction_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int,
                                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                                 ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int, ctypes.c_int,
                                                 ctypes.c_void_p]
        self.has_bottom_mlp = hasattr(lib, "dlrm_bottom_mlp_run")  # not in a library built before it
        if self.has_bottom_mlp:
            lib.dlrm_bottom_mlp_image_bytes.restype = ctypes.c_int
            lib.dlrm_bottom_mlp_run.restype = ctypes.c_int
            lib.dlrm_bottom_mlp_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int,
                                                ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_longlong,
                                                ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
        self._lib = lib
        self._workspace: dict[torch.device, torch.Tensor] = {}
        self._retired: list[torch.Tensor] = []

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

    def bottom_mlp_image_bytes(self) -> int:
        """Size of the shared-memory image the bottom-MLP kernel loads (bottom_mlp.wgmma_image builds it)."""
        return int(self._lib.dlrm_bottom_mlp_image_bytes())

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


def hopper_kernel_library(device: torch.device, what: str, present: str) -> KernelLibrary:
    """The loaded library, for the CUDA `what` kernel on `device`: KernelsUnavailable where the GPU is not a Hopper
    (the library is built for sm_90a) or the library predates the kernel (its attribute `present` is false)."""
    capability = torch.cuda.get_device_capability(device)
    if capability != (9, 0):
        raise KernelsUnavailable(f"the CUDA {what} kernel is built for Hopper (sm_90a); this GPU is sm_"
                                 f"{capability[0]}{capability[1]}")
    lib = kernel_library()
    if not getattr(lib, present):
        raise KernelsUnavailable(f"{lib.path}: built before the CUDA {what} kernel; rebuild it with "
                                 "`make kernels`")
    return lib


def kernel_library() -> KernelLibrary:
    """The library, loaded once per process."""
    global _LOADED
    if _LOADED is None:
        _LOADED = KernelLibrary()
    return _LOADED
