"""The results table printed at the end of a run, and `dlrm-bench report <log folder>`: one table over every
run found under a log folder (a run root such as build/logs/latest, or build/logs itself), plus the plots of
runs that lack them."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Iterable

from dlrm_bench.errors import UserError


def _fmt(value: Any, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def outcome(result: dict[str, Any]) -> str:
    """FAILED for a run that did not complete; VALID/INVALID for performance runs; PASS/FAIL for accuracy runs,
    TEST PASS/TEST FAIL for compliance tests ('-' where not judged)."""
    if result.get("result") == "FAILED" or result.get("error"):
        return "FAILED"
    if result.get("compliance_test") or result["test_mode"] == "AccuracyOnly":
        passed = result.get("compliance_passed" if result.get("compliance_test") else "accuracy_passed")
        prefix = "TEST " if result.get("compliance_test") else ""
        return "-" if passed is None else prefix + ("PASS" if passed else "FAIL")
    return "VALID" if result.get("result_valid") else "INVALID"


def verdict(result: dict[str, Any]) -> str:
    """outcome() with what a reader needs beside it: why a run FAILED, LoadGen's reason for INVALID, and
    'short run' for durations below MLPerf's."""
    word = outcome(result)
    if word == "FAILED":
        return f"FAILED: {result.get('failure') or result.get('error')}"
    if word in ("VALID", "INVALID") and result.get("shortened_run"):
        word += " (short run)"
    return f"{word}: {result.get('invalid_reason') or 'no reason logged'}" if word.startswith("INVALID") else word


THROUGHPUT_UNITS = {"Offline": "samples/s", "Server": "scheduled samples/s", "SingleStream": "QPS"}
"""The unit of the throughput LoadGen reports per scenario (loadgen_logs.SCORE_KEYS)."""


def throughput_cell(result: dict[str, Any]) -> str:
    value = result.get("samples_per_second")
    return "-" if value is None else f"{value:,.1f} {THROUGHPUT_UNITS.get(result['scenario'], 'samples/s')}"


def latency_cell(result: dict[str, Any]) -> str:
    """Server: p99; SingleStream: p90 (LoadGen's early-stopping estimate); Offline: none."""
    for name, key in (("p99", "latency_p99_ms"), ("p90", "latency_p90_ms")):
        if result.get(key) is not None and result["scenario"] != "Offline":
            return f"{name} {result[key]:.2f} ms"
    return "-"


def results_table(results: Iterable[dict[str, Any]], first: tuple[str, ...] = ()) -> str:
    """The table; `first` names extra leading columns taken from each result (e.g. "run")."""
    header = first + ("scenario", "config_ver", "mode", "throughput", "pairs/s", "latency", "AUC %", "ratio %",
                      "result")
    rows = [header]
    for r in results:
        rows.append(tuple(str(r.get(k, "")) for k in first) + (
            r["scenario"], r["config_ver"], r.get("compliance_test") or r.get("run_label") or r["test_mode"].replace("Only", ""),
            throughput_cell(r), _fmt(r.get("pairs_per_second"), ",.0f"), latency_cell(r),
            _fmt(None if r.get("auc") is None else 100 * r["auc"], ".4f"),
            _fmt(None if r.get("auc_ratio") is None else 100 * r["auc_ratio"], ".3f"),
            verdict(r),
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def find_results(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(run folder, result.json content) of every run under `folder`, in path order. Symlinks inside (such as
    build/logs/latest) are not followed, so no run is counted twice; unreadable files are skipped with a note."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if "result.json" not in files:
            continue
        path = Path(root) / "result.json"
        try:
            result = json.loads(path.read_text())
            missing = [k for k in ("scenario", "config_ver", "test_mode") if k not in result]
        except (OSError, ValueError, TypeError) as exc:
            missing, result = [f"unreadable: {type(exc).__name__}: {exc}"], {}
        if missing:
            print(f"note: skipping {path} (missing {', '.join(missing)})")
            continue
        found.append((Path(root), result))
    return found


def _run_label(folder: Path, run_dir: Path) -> str:
    """The <timestamp> folder of a run, relative to the report's folder ('' when the folder is a run root)."""
    rel = run_dir.relative_to(folder).parts
    return rel[0] if len(rel) > 5 else ""


def main(args: argparse.Namespace) -> int:
    """`dlrm-bench report [LOG_DIR] [--no-plots]`: the results table of every run under LOG_DIR."""
    from dlrm_bench.paths import logs_dir
    from dlrm_bench.plots import LATENCY_PNG, THROUGHPUT_PNG, write_run_plots

    given = Path(args.log_dir) if args.log_dir else logs_dir() / "latest"
    if not given.exists():
        raise UserError(f"{given}: log folder not found (`make run` writes build/logs/<timestamp>/)")
    folder = given.resolve()
    runs = find_results(folder)
    if not runs:
        raise UserError(f"{given}: no runs here (no result.json under it)")
    rows = []
    for run_dir, result in runs:
        result["run"] = _run_label(folder, run_dir)
        drawn = (run_dir / THROUGHPUT_PNG).exists() or (run_dir / LATENCY_PNG).exists()
        if getattr(args, "plots", True) and not drawn:
            write_run_plots(run_dir, result)
        rows.append(result)
    several = len({r["run"] for r in rows}) > 1
    print(f"{len(rows)} runs under {folder}")
    print(results_table(rows, ("run",) if several else ()))
    return 0
