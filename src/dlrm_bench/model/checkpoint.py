"""Checkpoints in the reference layout: a dict holding `state_dict` plus the extra keys the reference saves.

The MLCommons training script (dlrm_s_pytorch.py) saves {epoch, nepochs, nbatches, nbatches_test, iter,
state_dict, train_acc, train_loss, test_acc, test_loss, total_loss, total_accu, opt_state_dict}; its metrics are
numpy scalars (numpy.float64 / numpy.int64), which current torch's `weights_only=True` unpickler rejects. Loading
therefore allows exactly those numpy scalar and dtype globals (data, not code); anything else in a file is refused
unless the caller opts in (`trust=True` or DLRM_BENCH_TRUST_CHECKPOINT=1), because an unrestricted unpickle can
run arbitrary code.

Files written by torch.save's zip format are memory-mapped (`mmap=True`): a 96 GB tb00_40M.pt is paged in from
disk on demand, never read into RAM and then copied; `DLRM.from_state_dict` uses the tensors as they are.
"""

from __future__ import annotations

import os
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from dlrm_bench.atomic import atomic_path
from dlrm_bench.errors import UserError
from dlrm_bench.model.dlrm import reference_shapes

TRUST_ENV = "DLRM_BENCH_TRUST_CHECKPOINT"
"""Set to 1 to allow a full (code-executing) unpickle of checkpoints that need more than the allow-list."""

LARGE_LEGACY_BYTES = 1 << 30
"""Legacy-format files above this size get a note on stderr: they are read into RAM, not memory-mapped."""

REFERENCE_EXTRA_KEYS = ("epoch", "nepochs", "nbatches", "nbatches_test", "iter", "train_acc", "train_loss",
                        "test_acc", "test_loss", "total_loss", "total_accu", "opt_state_dict")
"""The keys the reference training script saves next to `state_dict`."""


def _numpy_allow_list() -> list[Any]:
    """Globals that unpickle numpy scalars: the scalar constructor under its numpy 1.x and 2.x names, and dtypes."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import scalar  # numpy 1.x
    allowed: list[Any] = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
                          np.dtype]
    for kind in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8,
                 np.uint16, np.uint32, np.uint64, np.bool_):
        dtype_class = type(np.dtype(kind))
        if dtype_class is not np.dtype:  # numpy >= 1.25 has one class per dtype
            allowed.append(dtype_class)
    return allowed


@dataclass
class Checkpoint:
    """A loaded checkpoint: `state_dict` in the reference layout (CPU tensors, memory-mapped when possible) and
    the other top-level keys as plain Python values (numpy scalars converted)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    extras: dict[str, Any] = field(default_factory=dict)
    memory_mapped: bool = False

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Rows of each table, read from the emb_l.{k}.weight shapes."""
        count = sum(1 for key in self.state_dict if key.startswith("emb_l.") and key.endswith(".weight"))
        return tuple(int(self.state_dict[f"emb_l.{k}.weight"].shape[0]) for k in range(count))


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, recursively through dicts and lists; other values unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _trusted(trust: bool | None) -> bool:
    return bool(trust) if trust is not None else os.environ.get(TRUST_ENV, "") == "1"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def _torch_load(path: Path, mmap: bool, trust: bool) -> Any:
    """torch.load on CPU with weights_only=True and the numpy allow-list; a full unpickle only if trusted."""
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"{path}: the checkpoint file is empty (0 bytes): download or train it again")
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        unsafe = _unsafe_globals(path)
        raise UserError(
            f"{path}: refusing to unpickle it: it holds Python objects beyond tensors and numpy scalars "
            f"({', '.join(unsafe) if unsafe else _first_line(exc)}), and loading them can run "
            f"arbitrary code. If you trust the file's source, set {TRUST_ENV}=1 and run again") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: not a readable torch checkpoint ({_first_line(exc)}); "
                        f"it may be truncated: download or train it again") from None


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy (non-zip) files cannot be inspected without unpickling
        return []


def load_checkpoint(path: str | os.PathLike[str], trust: bool | None = None) -> Checkpoint:
    """Load a reference-layout checkpoint (a dict holding `state_dict`, or a bare state_dict) onto the CPU.

    Zip-format files are memory-mapped; legacy (pre-1.6 torch.save) files cannot be, and are read into RAM once.
    trust: allow a full unpickle for files that need more than tensors and numpy scalars (default: the
    DLRM_BENCH_TRUST_CHECKPOINT environment variable).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found (`make download_model` fetches tb00_40M.pt; "
                        f"`dlrm-bench train` trains one on a preprocessed dataset)")
    mmap = zipfile.is_zipfile(path)
    if not mmap and path.stat().st_size > LARGE_LEGACY_BYTES:
        print(f"note: {path} is in torch's legacy (pre-1.6) format, which cannot be memory-mapped: reading "
              f"{path.stat().st_size / 2**30:.1f} GiB into memory (re-save it with save_checkpoint to avoid this)",
              file=sys.stderr)
    obj = _torch_load(path, mmap=mmap, trust=_trusted(trust))
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a dict holding 'state_dict', found {type(obj).__name__}")
    if "state_dict" in obj:
        state_dict, extras = obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    else:
        state_dict, extras = obj, {}
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UserError(f"{path}: 'state_dict' is not a mapping of tensor names to tensors")
    return Checkpoint(path, dict(state_dict), _plain(extras), memory_mapped=mmap)


def check_state_dict(state_dict: Mapping[str, torch.Tensor], cardinalities: Sequence[int], *,
                     source: str = "checkpoint", dataset: str = "the dataset") -> None:
    """Raise UserError unless `state_dict` has exactly the reference keys with the shapes these tables imply.

    The message names the first offending tensor and both shapes.
    """
    expected = reference_shapes(cardinalities)
    missing = [key for key in expected if key not in state_dict]
    if missing:
        raise UserError(f"{source}: tensor {missing[0]} is missing ({len(missing)} reference keys missing); "
                        f"not a DLRM checkpoint in the reference layout")
    unexpected = [key for key in state_dict if key not in expected]
    if unexpected:
        raise UserError(f"{source}: unexpected tensor {unexpected[0]} ({len(unexpected)} unexpected keys); "
                        f"the model must have exactly {len(cardinalities)} tables and the MLPerf v1 MLPs")
    for key, shape in expected.items():
        found = tuple(state_dict[key].shape)
        if found != shape:
            raise UserError(f"{source}: tensor {key} has shape {list(found)} but {dataset} needs {list(shape)}; "
                            f"the checkpoint was made for other data or another architecture: train a model "
                            f"for this dataset (`dlrm-bench train`) or pick the matching --dataset")
    for key, tensor in state_dict.items():
        if tensor.dtype != torch.float32:
            raise UserError(f"{source}: tensor {key} is {tensor.dtype}, expected torch.float32")


def load_for_dataset(path: str | os.PathLike[str], cardinalities: Sequence[int], dataset: str = "the dataset",
                     trust: bool | None = None) -> Checkpoint:
    """load_checkpoint, then check_state_dict against the dataset's table sizes."""
    ckpt = load_checkpoint(path, trust=trust)
    check_state_dict(ckpt.state_dict, cardinalities, source=str(ckpt.path), dataset=dataset)
    return ckpt


def _own_storage(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU tensor that is its storage's only user (torch.save would otherwise write the whole
    shared storage, e.g. a fused training table, with every view of it)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        tensor = tensor.clone()
    return tensor


def save_checkpoint(path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor],
                    extras: Mapping[str, Any] | None = None) -> Path:
    """Write {"state_dict": ..., **extras} with torch.save (zip format, mmap-able), atomically.

    extras must be weights_only-loadable (Python numbers, strings, lists, dicts, tensors).
    """
    path = Path(path)
    payload: dict[str, Any] = dict(_plain(dict(extras or {})))
    payload["state_dict"] = {k: _own_storage(v) for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path
