"""The fused gather + interaction kernel (interaction.c), compiled with the machine's C compiler on first use.

The shared library is cached under `$MLPERF_SCRATCH_PATH/cache/cpu_kernels/`, named by a hash of the source, the
compiler and the flags, so an edited kernel or another ISA gets its own file. With no compiler (or a failed
build) `load_kernel` returns None and the engine uses the slower torch path (interaction.py), saying so in
`describe()`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from dlrm_bench.paths import scratch_path

SOURCE = Path(__file__).with_name("interaction.c")
_LOCK = threading.Lock()
_CACHE: dict[str, "ctypes.CDLL | None"] = {}


def isa_flags() -> list[str]:
    """Compiler flags for the widest vector ISA the kernel uses that this CPU has (AVX2 or none)."""
    capability = torch.backends.cpu.get_cpu_capability()
    return ["-mavx2", "-mfma"] if capability in ("AVX2", "AVX512") else []


def compiler() -> str | None:
    """$CC if set, else the first of cc, gcc, clang on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else cc


def _build(cc: str, flags: list[str], target: Path) -> None:
    """Compile SOURCE into `target` through a temporary name in the same folder (atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cc, "-O3", "-fPIC", "-shared", "-std=c11", *flags, str(SOURCE), "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    fn = lib.dlrm_interaction
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [ptr, ptr, ptr, ptr, ptr, ptr, ptr, i64, i64, i64]
    fn.restype = i64
    return lib


def load_kernel() -> ctypes.CDLL | None:
    """The compiled kernel library (built once per process and cached on disk), or None without a compiler."""
    cc = compiler()
    if cc is None:
        return None
    flags = isa_flags()
    with _LOCK:
        if cc in _CACHE:
            return _CACHE[cc]
        try:
            key = hashlib.sha256(SOURCE.read_bytes() + _compiler_version(cc).encode()
                                 + " ".join(flags).encode()).hexdigest()[:16]
            target = scratch_path() / "cache" / "cpu_kernels" / f"interaction-{key}.so"
            if not target.exists():
                _build(cc, flags, target)
            lib: ctypes.CDLL | None = _bind(ctypes.CDLL(str(target)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"cpu engine: the native interaction kernel is not available ({exc}); using the torch path")
            lib = None
        _CACHE[cc] = lib
        return lib


def describe_kernel() -> str:
    """'native (cc -mavx2 -mfma)' or 'torch' -- what load_kernel gives on this machine."""
    return f"native ({' '.join(['cc', *isa_flags()])})" if load_kernel() is not None else "torch"
