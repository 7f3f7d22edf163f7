"""AUC from LoadGen accuracy logs (scikit-learn), and the FP32 reference AUC it is compared against.

An accuracy log holds, per LoadGen sample (`qsl_idx`), the float32 predictions of that sample's pairs as hex.
The AUC is computed over all pairs of all samples, each sample counted once.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from dlrm_bench.atomic import save_json, save_npy
from dlrm_bench.criteo.dataset import DatasetMeta, Split, open_partition
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.mlperf_rules import REFERENCE_AUC
from dlrm_bench.paths import scratch_path


@dataclass(frozen=True)
class AccuracyResult:
    """An AUC and the rule it is judged by: with `absolute` (the real Criteo Terabyte data) MLPerf's target
    REFERENCE_AUC x target_fraction; otherwise target_fraction x the FP32 AUC of the same model on the same data."""

    auc: float
    pairs: int
    samples: int
    auc_fp32_reference: float | None = None
    target_fraction: float | None = None
    absolute: bool = False

    @property
    def ratio(self) -> float | None:
        return None if self.auc_fp32_reference is None else self.auc / self.auc_fp32_reference

    @property
    def rule(self) -> str:
        return "absolute" if self.absolute else "relative"

    @property
    def target_auc(self) -> float | None:
        base = REFERENCE_AUC if self.absolute else self.auc_fp32_reference
        return None if base is None or self.target_fraction is None else base * self.target_fraction

    @property
    def passed(self) -> bool | None:
        return None if self.target_auc is None else self.auc >= self.target_auc

    def text(self) -> str:
        lines = [f"AUC={100 * self.auc:.4f}%  pairs={self.pairs} samples={self.samples}"]
        if self.auc_fp32_reference is not None:
            lines.append(f"FP32 reference AUC={100 * self.auc_fp32_reference:.4f}%  ratio={100 * self.ratio:.3f}%")
        if self.target_auc is not None:
            of = (f"MLPerf's reference AUC {100 * REFERENCE_AUC:.2f}% (absolute rule: the real Terabyte data)"
                  if self.absolute else "the FP32 reference AUC (relative rule: data other than the real Terabyte set)")
            lines.append(f"target AUC >= {100 * self.target_auc:.4f}% = {100 * self.target_fraction:g}% of {of}: "
                         f"{'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines) + "\n"


def read_accuracy_log(path: Path) -> dict[int, np.ndarray]:
    """qsl_idx -> float32 predictions [pairs of that sample]. A sample logged twice must agree with itself."""
    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: accuracy log not found") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a LoadGen accuracy log: not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); the run may have been cut short")
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a JSON list of {{seq_id, qsl_idx, data}} entries")
    out: dict[int, np.ndarray] = {}
    for n, entry in enumerate(entries):
        try:
            idx = int(entry["qsl_idx"])
            preds = np.frombuffer(bytes.fromhex(entry["data"]), dtype=np.float32)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: entry {n}: expected qsl_idx and hex float32 data ({exc})") from None
        if idx in out and not np.array_equal(out[idx], preds):
            raise DataError(f"{path}: sample {idx} logged twice with different predictions")
        out[idx] = preds
    return out


def gather_predictions(logged: dict[int, np.ndarray], offsets: np.ndarray, log: Path,
                       require_all: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Predictions in pair order [P] and the pair rows [P] they belong to; checks each sample's pair count.

    `require_all`: every sample of the partition must be logged (an AccuracyOnly run logs them all; MLPerf's
    accuracy-dlrm.py refuses a log that lacks some); False scores the logged ones (a compliance test's subset).
    """
    indices = np.array(sorted(logged), dtype=np.int64)
    total = len(offsets) - 1
    if indices.size == 0:
        raise DataError(f"{log}: no samples logged")
    outside = indices[(indices < 0) | (indices >= total)]
    if outside.size:
        raise DataError(f"{log}: sample index {outside[0]} outside the partition's {total} samples (0..{total - 1})")
    missing = np.setdiff1d(np.arange(total), indices)
    if require_all and missing.size:
        first = ", ".join(str(i) for i in missing[:5]) + (", ..." if missing.size > 5 else "")
        raise DataError(f"{log}: {indices.size} of {total} samples logged, missing qsl_idx {first}; an AccuracyOnly "
                        f"log holds every sample (was the run cut short, or is it another dataset's log?)")
    preds, rows = [], []
    for idx in indices:
        lo, hi = int(offsets[idx]), int(offsets[idx + 1])
        p = logged[int(idx)]
        if p.shape[0] != hi - lo:
            raise DataError(f"{log}: sample {idx} has {p.shape[0]} predictions, expected {hi - lo} (pairs {lo}..{hi})")
        preds.append(p)
        rows.append(np.arange(lo, hi))
    return np.concatenate(preds), np.concatenate(rows)


def auc(labels: np.ndarray, predictions: np.ndarray) -> float:
    if not np.all(np.isfinite(predictions)):
        raise DataError(f"{int((~np.isfinite(predictions)).sum())} predictions are NaN or infinite")
    if len(np.unique(labels)) < 2:
        raise DataError("AUC needs both clicks and non-clicks in the scored pairs")
    return float(roc_auc_score(labels, predictions))


def score_log(log: Path, split: Split, offsets: np.ndarray, require_all: bool = True) -> tuple[float, int, int]:
    """(AUC, pairs, samples) of an accuracy log against the split's labels; `require_all` as in
    gather_predictions."""
    logged = read_accuracy_log(log)
    preds, rows = gather_predictions(logged, offsets, log, require_all)
    return auc(np.asarray(split.labels)[rows], preds), int(rows.size), len(logged)


def _file_key(path: Path) -> str:
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def reference_cache_path(model_path: Path, meta: DatasetMeta) -> Path:
    key = hashlib.sha256(f"{_file_key(model_path)}|{meta.fingerprint}".encode()).hexdigest()[:20]
    return scratch_path() / "cache" / "reference" / f"{meta.name}-{Path(model_path).stem}-{key}"


def reference_auc(model_path: Path, meta: DatasetMeta, split: Split) -> float:
    """FP32 reference AUC of `model_path` on `split`, computed once per (model file, dataset) and cached."""
    cache = reference_cache_path(model_path, meta)
    result_file = cache / "reference_auc.json"
    if result_file.exists():
        return float(json.loads(result_file.read_text())["auc"])
    from dlrm_bench.engines import create_engine

    print(f"computing the FP32 reference AUC over {len(split):,} pairs (cached in {cache}) ...", flush=True)
    engine = create_engine("reference", model_path, meta)
    try:
        engine.load(split)
        preds = engine.predict_ranges(np.array([0]), np.array([len(split)]))
    finally:
        engine.close()
    value = auc(np.asarray(split.labels), preds)
    save_npy(cache / "predictions_fp32.npy", preds.astype(np.float32))
    save_json(result_file, {"auc": value, "model": str(model_path), "dataset": meta.name,
                            "fingerprint": meta.fingerprint, "pairs": len(split)})
    return value


def main(args: argparse.Namespace) -> int:
    """`dlrm-bench accuracy --log FILE`: re-score an existing accuracy log."""
    from dlrm_bench.criteo.dataset import open_split
    from dlrm_bench.inputs import resolve_inputs

    meta, model_path = resolve_inputs(args.dataset, args.dataset_dir, args.model, prepare=False)
    split = open_split(meta.directory / "test")
    offsets = open_partition(meta.directory / "test", len(split))
    value, pairs, samples = score_log(args.log, split, offsets)
    ref = reference_auc(model_path, meta, split) if model_path.exists() else None
    result = AccuracyResult(value, pairs, samples, ref)
    print(result.text(), end="")
    return 0

