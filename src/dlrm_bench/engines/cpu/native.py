"""The fused gather + interaction kernel (interaction.c), compiled with the machine's C compiler on first use.

The shared library is cached under `$MLPERF_SCRATCH_PATH/cache/cpu_kernels/` (dlrm_bench.c_build). With no compiler (or a failed
build) `load_kernel` returns None and the engine uses the slower torch path (interaction.py), saying so in
`describe()`.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from dlrm_bench.c_build import NativeBuildError, compile_shared, compiler

SOURCE = Path(__file__).with_name("interaction.c")
_LOCK = threading.Lock()
_CACHE: dict[str, "ctypes.CDLL | None"] = {}


def isa_flags() -> list[str]:
    """Compiler flags for the widest vector ISA the kernel uses that this CPU has (AVX2 or none)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return ["-mavx2", "-mfma"] if capability in ("AVX2", "AVX512") else []


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    fn = lib.dlrm_interaction
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64]
    fn.restype = i64
    hot = lib.dlrm_interaction_hot  # (tables, hot, remap, then as above)
    hot.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64]
    hot.restype = i64
    return lib


def load_kernel() -> ctypes.CDLL | None:
    """The compiled kernel library (built once per process and cached on disk), or None without a compiler."""
    cc = compiler()
    if cc is None:
        return None
    with _LOCK:
        if cc in _CACHE:
            return _CACHE[cc]
        try:
            lib: ctypes.CDLL | None = _bind(compile_shared(SOURCE, ["-std=c11", *isa_flags()], "cpu_kernels"))
        except NativeBuildError as exc:
            print(f"cpu engine: the native interaction kernel is not available ({exc}); using the torch path")
            lib = None
        _CACHE[cc] = lib
        return lib
