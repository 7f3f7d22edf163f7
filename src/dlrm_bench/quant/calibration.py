"""Calibration: activation ranges of the FP32 model on the calibration set, cached for the int8 engines.

The cache (`calibration_cache.json` in the model's derived folder) holds, for each tensor the int8 recipe
quantizes (quant/recipe.py), the maximum |value| per channel over the calibration rows:

    bot_l.0 [512], bot_l.2 [256], bot_l.4 [128]   bottom MLP outputs (after ReLU)
    interaction [351]                              the lower-triangle dots, in the reference order
    top_l.0 [1024], top_l.2 [1024], top_l.4 [512]  top MLP outputs (after ReLU)
    numeric_input [13]                             log1p'd inputs (informational: their int8 scale is fixed)

plus what it was made from: the model's key (size, mtime, content hash of its ends) and the calibration set's
dataset name, fingerprint and row count. An engine refuses a cache whose model key differs from the model it
loads, and one made from an earlier version of the same dataset (same name, other fingerprint: the data was
preprocessed again, e.g. from new days); a cache made on another dataset is used with a note.

Ranges are checked when the cache is written and read: every value finite and >= 0 (a maximum of |x| or of a
ReLU output), each tensor above at its width and not 0 in every channel (a layer that never fired). A single 0
is a ReLU channel that never fired on the calibration set, common even at the reference init; the recipe gives
it the smallest scale.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from dlrm_bench.atomic import save_json
from dlrm_bench.criteo.dataset import Split
from dlrm_bench.criteo.schema import NUM_SPARSE
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.progress import progress_bar
from dlrm_bench.quant.recipe import interaction_pairs

CACHE_FILE = "calibration_cache.json"
CACHE_FORMAT = 1
WIDTHS = {"bot_l.0": 512, "bot_l.2": 256, "bot_l.4": 128, "interaction": 351,
          "top_l.0": 1024, "top_l.2": 1024, "top_l.4": 512}
"""The tensors the recipe reads, and their channel counts."""
REBUILD = "`make generate_engines` will rebuild it"
Lookup = Callable[[int, np.ndarray], torch.Tensor]
"""(table, ids int [B]) -> fp32 rows [B, 128]."""


def _linear(x: torch.Tensor, sd: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    return x @ sd[f"{key}.weight"].T.float() + sd[f"{key}.bias"].float()


def batch_ranges(sd: Mapping[str, torch.Tensor], lookup: Lookup, numeric: np.ndarray,
                 categorical: np.ndarray) -> dict[str, torch.Tensor]:
    """Per-channel max |activation| of one batch. numeric fp32 [B, 13], categorical int [B, 26]."""
    out: dict[str, torch.Tensor] = {}
    x = torch.from_numpy(np.array(numeric, dtype=np.float32))
    out["numeric_input"] = x.abs().amax(0)
    for key in ("bot_l.0", "bot_l.2", "bot_l.4"):
        x = torch.relu(_linear(x, sd, key))
        out[key] = x.amax(0)
    emb = torch.stack([lookup(t, categorical[:, t]) for t in range(NUM_SPARSE)], dim=1)  # [B, 26, 128]
    vectors = torch.cat([x[:, None, :], emb], dim=1)
    r, c = interaction_pairs()
    dots = torch.bmm(vectors, vectors.transpose(1, 2))[:, r, c]
    out["interaction"] = dots.abs().amax(0)
    h = torch.cat([x, dots], dim=1)
    for key in ("top_l.0", "top_l.2", "top_l.4"):
        h = torch.relu(_linear(h, sd, key))
        out[key] = h.amax(0)
    return out


def compute_ranges(sd: Mapping[str, torch.Tensor], lookup: Lookup, split: Split, batch_size: int = 8192,
                   progress: bool = True) -> dict[str, torch.Tensor]:
    """Ranges over every row of `split` (the calibration set), in batches."""
    ranges: dict[str, torch.Tensor] = {}
    n = len(split)
    if n == 0:
        raise UserError(f"{split.directory}: the calibration set is empty")
    with torch.inference_mode():
        for lo in progress_bar(range(0, n, batch_size), desc="calibrating", unit="batch", disable=not progress):
            hi = min(n, lo + batch_size)
            part = batch_ranges(sd, lookup, split.numeric[lo:hi], np.asarray(split.categorical[lo:hi]))
            for key, value in part.items():
                ranges[key] = value if key not in ranges else torch.maximum(ranges[key], value)
    return ranges


def write_cache(path: Path, ranges: Mapping[str, torch.Tensor], model_key: str, dataset_fingerprint: str,
                rows: int, dataset_name: str | None = None) -> None:
    """Write the cache atomically after checking the ranges (DataError: the model gave a bad range)."""
    validate_ranges(path, ranges, "the model gave this on the calibration set: check its weights")
    save_json(path, {
        "format": CACHE_FORMAT, "model_key": model_key, "dataset_fingerprint": dataset_fingerprint,
        "dataset_name": dataset_name, "calibration_rows": rows, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ranges": {k: [float(x) for x in v.tolist()] for k, v in ranges.items()},
    })


def read_cache(path: Path, model_key: str, dataset_name: str | None = None,
               dataset_fingerprint: str | None = None) -> dict[str, torch.Tensor]:
    """The ranges, after checking the cache was made for this model (and, when the dataset is given, not from an
    earlier version of it); a clear error when missing or stale."""
    data, ranges = _parse(path)
    if data.get("format") != CACHE_FORMAT or data.get("model_key") != model_key:
        raise UserError(f"calibration cache {path} is stale: it was made for another model (or an older format); "
                        f"run `make calibrate RUN_ARGS=\"--benchmarks=dlrm\"`")
    _check_dataset(path, data, dataset_name, dataset_fingerprint)
    validate_ranges(path, ranges)
    return ranges


def load_ranges(path: Path) -> dict[str, torch.Tensor]:
    """The cache's ranges, checked (validate_ranges), whatever model or dataset it was made for."""
    ranges = _parse(path)[1]
    validate_ranges(path, ranges)
    return ranges


def _parse(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(the cache's JSON, its ranges as float32 tensors); UserError when missing or unreadable."""
    import json

    if not path.exists():
        raise UserError(f"calibration cache {path} is missing: run `make calibrate RUN_ARGS=\"--benchmarks=dlrm\"`")
    try:
        data = json.loads(path.read_text())
        return data, {k: torch.tensor(v, dtype=torch.float32).flatten() for k, v in data["ranges"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise DataError(f"calibration cache {path} is unreadable ({exc}); {REBUILD}") from None


def validate_ranges(path: Path, ranges: Mapping[str, torch.Tensor], fix: str = REBUILD) -> None:
    """DataError naming `path`, the tensor and the channel unless every range is finite and >= 0 and each tensor of
    WIDTHS is present at its width and not 0 in every channel."""
    for key, width in WIDTHS.items():
        if key not in ranges or ranges[key].numel() != width:
            raise DataError(f"calibration cache {path}: tensor {key} missing or not {width} wide; {fix}")
    for key, values in ranges.items():
        values = torch.as_tensor(values, dtype=torch.float32).flatten()
        bad = torch.nonzero(~torch.isfinite(values) | (values < 0)).flatten()
        if bad.numel():
            i = int(bad[0])
            raise DataError(f"calibration cache {path}: range {key}[{i}] is {float(values[i])}, expected a finite "
                            f"value >= 0; {fix}")
        if key in WIDTHS and not bool((values > 0).any()):
            raise DataError(f"calibration cache {path}: every range of {key} is 0 (the layer never fired on the "
                            f"calibration set); {fix}")


def _check_dataset(path: Path, data: dict, name: str | None, fingerprint: str | None) -> None:
    """Refuse a cache made from an earlier version of this dataset; note one made on another dataset."""
    made_on = data.get("dataset_name")
    if name is None or fingerprint is None or made_on is None or data.get("dataset_fingerprint") == fingerprint:
        return
    if made_on == name:
        raise UserError(f"calibration cache {path} is stale: it was made from an earlier version of dataset "
                        f"'{name}' (fingerprint {data.get('dataset_fingerprint')}, now {fingerprint}); run "
                        f"`make calibrate RUN_ARGS=\"--benchmarks=dlrm\"`")
    print(f"note: calibration cache {path} was made on dataset '{made_on}'; using it for '{name}'", flush=True)
