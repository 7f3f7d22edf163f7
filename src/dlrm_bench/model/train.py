"""`dlrm-bench train`: train the MLPerf v1 DLRM on a preprocessed dataset's training days, on the CPU.

The days (days/day_k/) are read in order, in chunks of memory-mapped rows shuffled within the chunk. The tables
are trained as one fused tensor with row-wise Adagrad (only the rows a batch touches are read and updated); the
MLPs get Adam. The reference trains everything with plain SGD; on a few minutes of data, adaptive steps learn
much faster. Precision is fp32 unless the CPU computes bf16 natively (AVX512-BF16 / AMX), where bf16 autocast
runs the GEMMs faster (measured on a 16-core AMX Xeon: 48,900 vs 39,600 pairs/s; one core 12,500 vs 6,800); on an
AVX2-only CPU bf16 is emulated and about 40x slower than fp32. The thread count is measured, not assumed
(ThreadTuner): on cores that other processes share, fewer threads can be much faster.

At the end the model is scored on the test split (roc_auc_score) with the FP32 reference engine, and the
checkpoint is written atomically in the reference layout with the reference's extra keys (no optimizer state:
training cannot be resumed from it).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from dlrm_bench.criteo.dataset import DatasetMeta, Split, load_meta, open_split
from dlrm_bench.errors import UserError
from dlrm_bench.model.checkpoint import save_checkpoint
from dlrm_bench.model.dlrm import DLRM, init_reference, predict_rows
from dlrm_bench.inputs import locate_args
from dlrm_bench.progress import progress_bar

DEFAULT_DENSE_LR = 1e-3
"""Adam learning rate of the MLPs (--lr sets it); the tables use EMBEDDING_LR_RATIO times it (row-wise Adagrad)."""
EMBEDDING_LR_RATIO = 20.0
CHUNK_ROWS = 1 << 18
"""Rows read and shuffled together."""


@dataclass
class TrainConfig:
    """What `train` needs; `dlrm-bench train` fills it from its flags (config_from_args)."""

    dataset_dir: Path
    output: Path
    dataset_name: str = ""
    epochs: int = 1
    batch_size: int = 2048
    lr: float | None = None
    seed: int = 0
    max_rows: int | None = None
    precision: str = "auto"
    """fp32, bf16, or auto (bf16 only where the CPU has native bf16 arithmetic)."""
    threads: int | None = None
    """Fixed torch thread count; None: ThreadTuner picks among all cores, half, one."""
    max_eval_rows: int | None = None
    """Score only the first rows of the test split (None: all of it)."""
    progress: bool = True


@dataclass
class TrainResult:
    """What a training run reached (also printed by `main` and saved in the checkpoint's extras)."""

    checkpoint: Path
    rows_trained: int
    train_seconds: float
    pairs_per_second: float
    precision: str
    threads: int
    train_loss: float
    test_rows: int
    test_auc: float
    test_loss: float
    test_acc: float


def native_bf16() -> bool:
    """True if the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str) -> str:
    if precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise UserError(f"unknown training precision {precision!r}: use fp32, bf16 or auto")
    return precision


def cpu_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class ThreadTuner:
    """Chooses torch's thread count by measuring it, batch by batch.

    On a machine whose cores other processes also use, OpenMP threads wait for each other and fewer threads than
    cores can be several times faster (measured here: 1 thread 3,100 pairs/s, 2 threads 1,200 pairs/s on 2 busy
    cores). Every `period` batches each candidate runs `probe` batches; the fastest per pair is used until the
    next round. Without `candidates` (a fixed count) it changes nothing.
    """

    def __init__(self, candidates: list[int], period: int = 100, probe: int = 3, warmup: int = 2) -> None:
        self.candidates = sorted(set(candidates), reverse=True)
        self.period, self.probe, self.warmup = period, probe, warmup
        self.best = self.candidates[0]
        self.batch = 0
        self.timings: dict[int, list[float]] = {}
        self.used: dict[int, int] = {}

    def _probing(self) -> int | None:
        """The candidate this batch probes, or None outside a probing round."""
        if len(self.candidates) < 2 or self.batch < self.warmup:
            return None
        slot = (self.batch - self.warmup) % self.period
        index = slot // self.probe
        return self.candidates[index] if index < len(self.candidates) else None

    def threads(self) -> int:
        """Thread count for the next batch (already applied to torch)."""
        count = self._probing() or self.best
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
        return count

    def record(self, threads: int, seconds: float, rows: int) -> None:
        probed = self._probing()
        if probed is not None:
            self.timings.setdefault(probed, []).append(seconds / max(rows, 1))
            if probed == self.candidates[-1] and len(self.timings[probed]) == self.probe:
                self.best = min(self.timings, key=lambda c: float(np.median(self.timings[c])))
                self.timings.clear()
        self.used[threads] = self.used.get(threads, 0) + 1
        self.batch += 1

    def most_used(self) -> int:
        return max(self.used, key=self.used.get) if self.used else torch.get_num_threads()


def thread_candidates(cores: int) -> list[int]:
    """All cores, half of them, and one."""
    return sorted({cores, max(1, cores // 2), 1}, reverse=True)


def training_days(dataset_dir: Path) -> list[Path]:
    """days/day_k folders in day order."""
    days_root = Path(dataset_dir) / "days"
    days = sorted((p for p in days_root.glob("day_*") if p.is_dir()), key=lambda p: int(p.name.split("_")[1]))
    if not days:
        raise UserError(f"{dataset_dir}: no training days (days/day_k/) in this preprocessed dataset")
    return days


def iter_batches(splits: list[Split], batch_size: int, rng: np.random.Generator, max_rows: int | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(numeric float32 [b, 13], categorical int64 [b, 26], labels float32 [b]) over the days in order, each
    chunk of CHUNK_ROWS rows shuffled; stops after max_rows rows."""
    budget = math.inf if max_rows is None else max_rows
    for split in splits:
        for lo in range(0, len(split), CHUNK_ROWS):
            if budget <= 0:
                return
            hi = int(min(lo + CHUNK_ROWS, len(split), lo + budget))
            order = rng.permutation(hi - lo)
            numeric = torch.from_numpy(np.asarray(split.numeric[lo:hi])[order])
            categorical = torch.from_numpy(np.asarray(split.categorical[lo:hi])[order].astype(np.int64))
            labels = torch.from_numpy(np.asarray(split.labels[lo:hi])[order])
            budget -= hi - lo
            for b in range(0, hi - lo, batch_size):
                yield numeric[b:b + batch_size], categorical[b:b + batch_size], labels[b:b + batch_size]


class FusedTables:
    """The 26 tables as row ranges of one [sum(rows), 128] tensor, updated with row-wise Adagrad.

    The model's emb_l.{k}.weight become views of this tensor (its state_dict stays the reference layout), so the
    training step does one gather and one update for all tables instead of 26 of each. Row-wise Adagrad keeps one
    accumulator per row (sum of the mean squared gradient), as production DLRM trainers do.
    """

    def __init__(self, model: DLRM, lr: float, eps: float = 1e-8) -> None:
        cards = model.cardinalities
        self.offsets = torch.tensor(np.concatenate(([0], np.cumsum(cards)[:-1])), dtype=torch.int64)
        self.weight = torch.empty(int(sum(cards)), model.emb_l[0].embedding_dim)
        for k, table in enumerate(model.emb_l):  # share storage: the model's tables become views
            rows = self.weight[int(self.offsets[k]):int(self.offsets[k]) + cards[k]]
            rows.copy_(table.weight.detach())
            table.weight = nn.Parameter(rows, requires_grad=False)
        self.accumulator = torch.zeros(self.weight.shape[0])
        self.lr, self.eps = lr, eps

    def lookup(self, categorical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """categorical int64 [B, 26] -> (fused row ids int64 [B*26], vectors [B, 26, 128]: a leaf that collects
        the gradient for `step`)."""
        rows = (categorical + self.offsets).reshape(-1)
        vectors = self.weight.index_select(0, rows).view(categorical.shape[0], categorical.shape[1], -1)
        return rows, vectors.requires_grad_()

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        """rows int64 [N], grad [N, 128] (one per lookup; duplicates summed) -> row-wise Adagrad update."""
        unique, inverse = torch.unique(rows, return_inverse=True)
        summed = torch.zeros(unique.shape[0], grad.shape[1]).index_add_(0, inverse, grad)
        acc = self.accumulator.index_add_(0, unique, summed.pow(2).mean(dim=1))[unique]
        self.weight.index_add_(0, unique, summed * (-self.lr / (acc.sqrt() + self.eps)).unsqueeze(1))


def dense_optimizer(model: DLRM, lr: float) -> torch.optim.Optimizer:
    """Adam on the MLPs (fused: one pass over the parameters instead of a dozen small ops per tensor)."""
    dense = [p for name, p in model.named_parameters() if not name.startswith("emb_l.")]
    return torch.optim.Adam(dense, lr=lr, fused=True)


@dataclass
class Trainer:
    """The model, its fused tables and the MLP optimizer: one `step` per batch."""

    model: DLRM
    tables: FusedTables
    optimizer: torch.optim.Optimizer
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.loss_fn = nn.BCEWithLogitsLoss(reduction="sum")

    def step(self, numeric: torch.Tensor, categorical: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
        """numeric [b, 13], categorical int64 [b, 26], labels [b] -> (summed log loss, correct at 0.5)."""
        ids, vectors = self.tables.lookup(categorical)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            logits = self.model.head(numeric, vectors)
        loss = self.loss_fn(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        (loss / labels.shape[0]).backward()
        self.optimizer.step()
        self.tables.step(ids, vectors.grad.view(ids.shape[0], -1))
        return float(loss.detach()), int(((logits.detach() > 0).float() == labels).sum())


def train_epoch(trainer: Trainer, batches: Iterator, total_rows: int, tuner: ThreadTuner, desc: str,
                progress: bool) -> tuple[int, float, float]:
    """One pass over `batches`: returns (rows, mean loss, accuracy at threshold 0.5)."""
    rows, loss_sum, correct = 0, 0.0, 0
    with progress_bar(total=total_rows, unit="pair", unit_scale=True, desc=desc, disable=not progress) as bar:
        for numeric, categorical, labels in batches:
            threads = tuner.threads()
            started = time.perf_counter()
            batch_loss, batch_correct = trainer.step(numeric, categorical, labels)
            tuner.record(threads, time.perf_counter() - started, labels.shape[0])
            rows, loss_sum, correct = rows + labels.shape[0], loss_sum + batch_loss, correct + batch_correct
            bar.update(labels.shape[0])
            bar.set_postfix(loss=f"{loss_sum / rows:.4f}", threads=threads, refresh=False)
    return rows, loss_sum / max(rows, 1), correct / max(rows, 1)


def evaluate(model: DLRM, split: Split, max_rows: int | None = None) -> dict[str, float]:
    """AUC, log loss and accuracy of `model` on (the first max_rows rows of) `split`, in fp32."""
    n = len(split) if max_rows is None else min(len(split), max_rows)
    model.eval()
    scores = predict_rows(model, split.numeric[:n], split.categorical[:n]).astype(np.float64)
    labels = np.asarray(split.labels[:n], dtype=np.float64)
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    auc = float(roc_auc_score(labels, scores)) if 0 < labels.sum() < n else float("nan")
    return {"rows": n, "auc": auc, "loss": loss, "acc": float(np.mean((scores > 0.5) == (labels > 0.5)))}


def train(config: TrainConfig) -> TrainResult:
    """Train from scratch on config.dataset_dir's days, evaluate on its test split, write config.output.

    Uses config.threads, or (default) the fastest of all cores / half / one as measured while training
    (ThreadTuner); restores torch's thread count after.
    """
    if config.epochs < 1 or config.batch_size < 1:
        raise UserError(f"epochs and batch size must be positive (got {config.epochs}, {config.batch_size})")
    previous_threads = torch.get_num_threads()
    try:
        return _train(config)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: TrainConfig) -> TrainResult:
    meta = load_meta(config.dataset_dir)
    splits = [open_split(day) for day in training_days(config.dataset_dir)]
    test = open_split(Path(config.dataset_dir) / "test")
    tuner = ThreadTuner([config.threads] if config.threads else thread_candidates(cpu_threads()))
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = init_reference(DLRM(meta.cardinalities), torch.Generator().manual_seed(config.seed))
    dense_lr = config.lr or DEFAULT_DENSE_LR
    trainer = Trainer(model, FusedTables(model, dense_lr * EMBEDDING_LR_RATIO), dense_optimizer(model, dense_lr),
                      resolve_precision(config.precision))
    available = sum(len(s) for s in splits)
    per_epoch = available if config.max_rows is None else min(config.max_rows, available)

    start = time.perf_counter()
    rows, train_loss, train_acc = 0, float("nan"), float("nan")
    for epoch in range(config.epochs):
        batches = iter_batches(splits, config.batch_size, rng, config.max_rows)
        n, train_loss, train_acc = train_epoch(trainer, batches, per_epoch, tuner,
                                               f"train {trainer.precision} epoch {epoch + 1}/{config.epochs}",
                                               config.progress)
        rows += n
    seconds = time.perf_counter() - start

    metrics = evaluate(model, test, config.max_eval_rows)
    result = TrainResult(Path(config.output), rows, seconds, rows / seconds if seconds > 0 else 0.0,
                         trainer.precision, tuner.most_used(), train_loss, int(metrics["rows"]), metrics["auc"],
                         metrics["loss"], metrics["acc"])
    save_checkpoint(config.output, model.state_dict(), _extras(config, meta, trainer, result, train_acc))
    return result


def _extras(config: TrainConfig, meta: DatasetMeta, trainer: Trainer, result: TrainResult,
            train_acc: float) -> dict[str, Any]:
    """The reference's extra checkpoint keys, and this project's own under "dlrm_bench"."""
    nbatches = math.ceil(result.rows_trained / config.epochs / config.batch_size)
    return {"epoch": config.epochs - 1, "nepochs": config.epochs, "nbatches": nbatches,
            "nbatches_test": math.ceil(result.test_rows / config.batch_size), "iter": nbatches,
            "train_acc": train_acc, "train_loss": result.train_loss, "test_acc": result.test_acc,
            "test_loss": result.test_loss, "test_auc": result.test_auc,
            "dlrm_bench": {"dataset": config.dataset_name or meta.name, "fingerprint": meta.fingerprint,
                           "cardinalities": list(meta.cardinalities), "precision": trainer.precision,
                           "rows_trained": result.rows_trained, "train_seconds": result.train_seconds,
                           "threads": result.threads, "seed": config.seed,
                           "optimizer": f"row-wise Adagrad (tables, lr={trainer.tables.lr:g}) + Adam (MLPs, "
                                        f"lr={trainer.optimizer.param_groups[0]['lr']:g})"}}


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `dlrm-bench train` flags -> TrainConfig (dataset and model paths by the locate rules)."""
    located = locate_args(args)
    output = getattr(args, "output", None) or located.model_path
    return TrainConfig(dataset_dir=located.dataset_dir, output=Path(output), dataset_name=located.dataset,
                       epochs=getattr(args, "epochs", 1), batch_size=getattr(args, "batch_size", 2048),
                       lr=getattr(args, "lr", None), seed=getattr(args, "seed", 0),
                       max_rows=getattr(args, "max_rows", None), precision=getattr(args, "precision", "auto"),
                       threads=getattr(args, "threads", None), max_eval_rows=getattr(args, "max_eval_rows", None))


def main(args: argparse.Namespace) -> int:
    """Entry point of `dlrm-bench train`: train, write the checkpoint, print what was reached and how fast."""
    config = config_from_args(args)
    result = train(config)
    print(f"trained on {result.rows_trained:,} pairs in {result.train_seconds:.1f} s "
          f"({result.pairs_per_second:,.0f} pairs/s, {result.precision}, {result.threads} threads)")
    print(f"test AUC {result.test_auc:.4f} (log loss {result.test_loss:.4f}, accuracy {result.test_acc:.4f}) "
          f"on {result.test_rows:,} pairs")
    print(f"checkpoint: {result.checkpoint}")
    return 0

