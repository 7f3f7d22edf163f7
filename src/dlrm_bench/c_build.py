"""Compile a C source into a shared library on first use and cache it on disk.

The library lives under `$MLPERF_SCRATCH_PATH/cache/<folder>/`, named by a hash of the source, the compiler and
the flags, so an edited source or another ISA gets its own file. The build writes to a temporary name in the same
folder and renames it (atomic). `compile_shared` raises `NativeBuildError`; callers decide on a fallback.
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

from dlrm_bench.paths import scratch_path

_LOCK = threading.Lock()
_LOADED: dict[Path, ctypes.CDLL] = {}


class NativeBuildError(RuntimeError):
    """No C compiler, or the compiler failed (the message holds the command and its stderr)."""


def compiler() -> str | None:
    """$CC if set, else the first of cc, gcc, clang on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else cc


def _build(cc: str, source: Path, flags: list[str], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cc, "-O3", "-fPIC", "-shared", *flags, str(source), "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise NativeBuildError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def compile_shared(source: Path, flags: list[str], folder: str) -> ctypes.CDLL:
    """The compiled `source` (built once, cached on disk and per process)."""
    cc = compiler()
    if cc is None:
        raise NativeBuildError("no C compiler found ($CC, cc, gcc or clang)")
    with _LOCK:
        try:
            key = hashlib.sha256(source.read_bytes() + _compiler_version(cc).encode()
                                 + " ".join(flags).encode()).hexdigest()[:16]
            target = scratch_path() / "cache" / folder / f"{source.stem}-{key}.so"
            if target in _LOADED:
                return _LOADED[target]
            if not target.exists():
                _build(cc, source, flags, target)
            lib = ctypes.CDLL(str(target))
        except (OSError, subprocess.SubprocessError) as exc:
            raise NativeBuildError(str(exc)) from exc
        _LOADED[target] = lib
        return lib
