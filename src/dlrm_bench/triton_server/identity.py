"""What identifies a served model and its data across hosts: the dataset's fingerprint (meta.json) and a model
identity that does not depend on paths or file times, cheap even for a 24-90 GB model."""

from __future__ import annotations

import hashlib
from pathlib import Path

EDGE_BYTES = 1 << 20
WEIGHT_SUFFIXES = (".pt", ".bin")


def _file_digest(path: Path, digest: "hashlib._Hash", label: str) -> None:
    size = path.stat().st_size
    digest.update(f"{label}:{size}:".encode())
    with open(path, "rb") as f:
        digest.update(f.read(EDGE_BYTES))
        if size > 2 * EDGE_BYTES:
            f.seek(-EDGE_BYTES, 2)
            digest.update(f.read(EDGE_BYTES))


def model_identity(model_path: Path) -> str:
    """sha256 (16 hex digits) over the size, first and last MiB of the checkpoint, or of each weight file (.pt,
    .bin) of a model folder; '' when the model is not there."""
    path = Path(model_path)
    files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES) if path.is_dir() else [path]
    if not files or not all(p.is_file() for p in files):
        return ""
    digest = hashlib.sha256()
    for file in files:  # a folder's files by name; a checkpoint's own name does not count
        _file_digest(file, digest, file.name if path.is_dir() else "")
    return digest.hexdigest()[:16]
