"""Plots of one run (PNG, matplotlib's Agg backend), written into its run folder after the run.

- `throughput.png`: completed samples/s (and pairs/s) over time. LoadGen's detail log has no per-query times
  (only its trace, which the harness leaves off: it costs too much at full rate), so the times are the SUT's own:
  `sut_completions.npy` holds one row per completed batch: float64 [batches, 3] = (seconds since LoadGen's
  StartTest, samples, pairs).
- `latency.png` (Server and SingleStream performance runs): LoadGen's latency percentiles from
  `mlperf_log_detail.txt` (min, 50, 90, 95, 97, 99, 99.9 %, max), with the scenario's latency bound.

Plotting never fails a run: a problem is printed as one line and the run goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dlrm_bench.atomic import atomic_path, save_npy
from dlrm_bench.loadgen_logs import read_detail_log

TIMELINE_FILE = "sut_completions.npy"
THROUGHPUT_PNG = "throughput.png"
LATENCY_PNG = "latency.png"
PERCENTILES = ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90")
LATENCY_SCENARIOS = ("Server", "SingleStream")


def save_timeline(out: Path, timeline: Sequence[tuple[float, int, int]], t0: float) -> None:
    """The SUT's completions as float64 [batches, 3]: (seconds since t0, samples, pairs), in time order."""
    array = np.array(sorted(timeline), dtype=np.float64).reshape(-1, 3)
    array[:, 0] -= t0
    save_npy(out / TIMELINE_FILE, array)


def throughput_series(timeline: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin centres s, samples/s, pairs/s) over [0, last completion] in equal bins: by default one per ~3
    batches, at most 60, each at least 10 ms wide."""
    if bins is None:
        bins = int(np.clip(len(timeline) // 3, 1, 60))
    end = float(timeline[:, 0].max()) if timeline.size else 0.0
    width = max(end / bins, 0.01)
    edges = np.linspace(0.0, width * bins, bins + 1)
    samples, _ = np.histogram(timeline[:, 0], edges, weights=timeline[:, 1])
    pairs, _ = np.histogram(timeline[:, 0], edges, weights=timeline[:, 2])
    return (edges[:-1] + edges[1:]) / 2, samples / width, pairs / width


def latency_percentiles(detail: dict[str, Any]) -> list[tuple[str, float]]:
    """[(label, milliseconds)] from a parsed detail log: min, the percentiles, max (those present)."""
    points = [("min", detail.get("result_min_latency_ns"))]
    points += [(f"p{p.rstrip('0').rstrip('.')}", detail.get(f"result_{p}_percentile_latency_ns")) for p in PERCENTILES]
    points.append(("max", detail.get("result_max_latency_ns")))
    return [(label, float(ns) / 1e6) for label, ns in points if ns is not None]


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _title(result: dict[str, Any]) -> str:
    mode = result.get("compliance_test") or result.get("test_mode", "")
    return f"{result.get('scenario', '')} {result.get('config_ver', '')} {mode} ({result.get('engine', '')} engine)"


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_throughput(out: Path, result: dict[str, Any]) -> Path | None:
    """throughput.png from sut_completions.npy (None when there is no timeline): completed samples over time
    (with LoadGen's mean rate as a line), and the completion rate per time bin."""
    path = out / TIMELINE_FILE
    if not path.exists():
        return None
    timeline = np.load(path)
    if timeline.size == 0:
        return None
    plt = _figure()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    try:
        _cumulative(top, timeline, result.get("samples_per_second"))
        _rate(bottom, timeline)
        top.set_title(f"throughput over time: {_title(result)}", fontsize=10)
        fig.tight_layout()
        return _save(fig, out / THROUGHPUT_PNG)
    finally:
        plt.close(fig)


def _cumulative(ax: Any, timeline: np.ndarray, reported: float | None) -> None:
    times = np.concatenate(([0.0], timeline[:, 0]))
    done = np.concatenate(([0.0], np.cumsum(timeline[:, 1])))
    ax.step(times, done, where="post", color="tab:blue", label="completed samples (SUT)")
    if reported:
        ax.plot([0.0, times[-1]], [0.0, reported * times[-1]], color="tab:gray", linestyle="--", linewidth=1,
                label=f"LoadGen: {reported:,.1f} samples/s")
    ax.set_ylabel("samples completed")
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize=8)


def _rate(ax: Any, timeline: np.ndarray) -> None:
    centres, sps, pps = throughput_series(timeline)
    width = centres[1] - centres[0] if len(centres) > 1 else 2 * centres[0]
    ax.bar(centres, sps, width=width * 0.9, color="tab:blue", alpha=0.7, label="samples/s")
    ax.set_ylabel("samples per second")
    ax.set_xlabel(f"seconds since the start of the test ({len(timeline):,} batches, {len(centres)} bins)")
    right = ax.twinx()
    right.plot(centres, pps, color="tab:orange", marker=".", label="pairs/s")
    right.set_ylabel("pairs per second")
    right.set_ylim(bottom=0)
    handles = [h for a in (ax, right) for h in a.get_legend_handles_labels()[0]]
    labels = [lab for a in (ax, right) for lab in a.get_legend_handles_labels()[1]]
    ax.legend(handles, labels, loc="upper left", fontsize=8)


def plot_latency(out: Path, result: dict[str, Any]) -> Path | None:
    """latency.png for Server / SingleStream performance runs (None otherwise or without percentiles)."""
    if result.get("scenario") not in LATENCY_SCENARIOS or result.get("test_mode") != "PerformanceOnly":
        return None
    points = latency_percentiles(read_detail_log(out / "mlperf_log_detail.txt"))
    if not points:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    try:
        labels, values = zip(*points)
        bars = ax.bar(labels, values, color="tab:green")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
        bound = (result.get("loadgen_settings") or {}).get("server_target_latency_ms")
        if result.get("scenario") == "Server" and bound:
            ax.axhline(bound, color="tab:red", linestyle="--", label=f"target {bound:g} ms at p99")
            ax.legend(loc="upper left", fontsize=8)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"latency percentiles (LoadGen): {_title(result)}", fontsize=10)
        fig.tight_layout()
        return _save(fig, out / LATENCY_PNG)
    finally:
        plt.close(fig)


def write_run_plots(out: Path, result: dict[str, Any]) -> list[Path]:
    """Every plot that applies to this run; a failure is printed, never raised."""
    written: list[Path] = []
    for plot in (plot_throughput, plot_latency):
        try:
            path = plot(out, result)
        except Exception as exc:  # a plot must never cost the run its results
            print(f"note: {plot.__name__} skipped for {out}: {type(exc).__name__}: {exc}", flush=True)
            continue
        if path is not None:
            written.append(path)
    return written
