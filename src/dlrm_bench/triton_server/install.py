"""Where the `tritonserver` binary and its Python backend are, and the private backend folder the project uses.

The binary comes from the `nvidia-pytriton` wheel (`pytriton/tritonserver/bin/tritonserver`, the Python backend in
`backends/python/`, one stub per Python version in `python_backend_stubs/<major.minor>/`); an NGC-style install
(`<root>/bin/tritonserver` with the stub already in `<root>/backends/python/`) works too. `DLRM_TRITONSERVER`
names the binary explicitly. The installation is never modified: each server gets its own backend folder of
symbolic links with the stub that matches this interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from dlrm_bench.errors import UserError

BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB = "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonInstall:
    """A tritonserver binary and the Python-backend files that go with it."""

    binary: Path
    python_backend: Path
    stub: Path


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _pytriton_root() -> Path | None:
    """pytriton/tritonserver without importing pytriton (it is installed without its dependencies)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def _candidate_binaries() -> list[Path]:
    explicit = os.environ.get("DLRM_TRITONSERVER")
    if explicit:
        return [Path(explicit)]
    found = []
    root = _pytriton_root()
    if root is not None:
        found.append(root / "bin" / "tritonserver")
    on_path = shutil.which("tritonserver")
    if on_path:
        found.append(Path(on_path))
    found.append(Path("/opt/tritonserver/bin/tritonserver"))
    return found


def _find_stub(root: Path) -> Path | None:
    for stub in (root / "python_backend_stubs" / python_version() / STUB, root / "backends" / "python" / STUB):
        if stub.is_file():
            return stub
    return None


def find_triton() -> TritonInstall:
    """The first usable installation; a UserError that says how to get one otherwise."""
    tried = []
    for binary in _candidate_binaries():
        tried.append(str(binary))
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            continue
        root = binary.resolve().parent.parent
        backend = root / "backends" / "python"
        if not all((backend / name).is_file() for name in BACKEND_FILES):
            raise UserError(f"{binary}: Triton's Python backend is missing ({backend} lacks "
                            f"{' or '.join(BACKEND_FILES)})")
        stub = _find_stub(root)
        if stub is None:
            raise UserError(f"{binary}: no Python backend stub for Python {python_version()} (looked in "
                            f"{root / 'python_backend_stubs' / python_version()} and {backend}); use a Python "
                            f"version the nvidia-pytriton wheel ships a stub for")
        return TritonInstall(binary, backend, stub)
    raise UserError(f"tritonserver not found (tried {', '.join(tried)}): run `make setup` (installs the "
                    f"nvidia-pytriton wheel that ships it) or set DLRM_TRITONSERVER to the binary")


def make_backend_dir(install: TritonInstall, folder: Path) -> Path:
    """`folder/python/` linking the backend library, its utils and the matching stub; returns `folder`."""
    target = folder / "python"
    target.mkdir(parents=True, exist_ok=True)
    links = {name: install.python_backend / name for name in BACKEND_FILES}
    links[STUB] = install.stub
    for name, source in links.items():
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source.resolve())
    return folder


def stub_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the stub must load this interpreter's libpython (not another 3.x on the
    system), so its LIBDIR goes first on LD_LIBRARY_PATH when the interpreter is a shared build."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    shared = sysconfig.get_config_var("Py_ENABLE_SHARED")
    if libdir and shared and any(Path(libdir).glob(f"libpython{python_version()}*.so*")):
        parts = [libdir] + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    return env


def stub_sys_path() -> list[str]:
    """This process's import path (virtual environment, PYTHONPATH, the project's src/), for the stub: the
    stub does not read PYTHONPATH, so the model prepends these entries itself."""
    package_root = str(Path(__file__).resolve().parents[2])
    stdlib = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")}

    def is_stdlib(path: str) -> bool:
        in_stdlib = any(path == s or path.startswith(s + os.sep) for s in stdlib)
        return (in_stdlib or path.endswith(".zip")) and "-packages" not in path

    entries = [p for p in sys.path if p and Path(p).exists() and not is_stdlib(p)]
    if package_root not in entries:
        entries.append(package_root)
    return entries
