"""The log tree of the output contract: build/logs/<timestamp>/<system>/dlrm/<Scenario>/<config_ver>/<test_mode>/."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dlrm_bench.errors import UserError


def make_run_root(log_root: Path) -> Path:
    """Create build/logs/<timestamp>/ (a fresh name even if two runs start in the same second)."""
    stamp = time.strftime("%Y.%m.%d-%H.%M.%S")
    try:
        log_root.mkdir(parents=True, exist_ok=True)
        for n in range(100):
            root = log_root / (stamp if n == 0 else f"{stamp}-{n}")
            try:
                root.mkdir()
                break
            except FileExistsError:
                continue
        probe = root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"log directory {log_root} is not writable ({exc.strerror}); "
                        f"pass --log_dir with a writable folder") from None
    return root


def run_dir(root: Path, system_id: str, scenario: str, config_ver: str, test_mode: str) -> Path:
    path = root / system_id / "dlrm" / scenario / config_ver / test_mode
    path.mkdir(parents=True, exist_ok=True)
    return path


def update_latest(log_root: Path, root: Path) -> None:
    """Point build/logs/latest at `root` (replaced atomically)."""
    link = log_root / "latest"
    tmp = log_root / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(root.name)
    os.replace(tmp, link)


def remove_if_empty(root: Path) -> None:
    """Remove the run folder `root` of an invocation that wrote no file into it (a failed start), and the empty
    folders under it."""
    if not root.is_dir() or any(p.is_file() or p.is_symlink() for p in root.rglob("*")):
        return
    for folder in sorted((p for p in root.rglob("*")), key=lambda p: len(p.parts), reverse=True):
        folder.rmdir()
    root.rmdir()
