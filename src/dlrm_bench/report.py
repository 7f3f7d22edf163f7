"""The results table printed at the end of a run (and by `dlrm-bench report`)."""

from __future__ import annotations

from typing import Any, Iterable


def _fmt(value: Any, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def verdict(result: dict[str, Any]) -> str:
    """VALID/INVALID for performance runs, PASS/FAIL for accuracy runs; 'shortened' marks non-MLPerf durations."""
    if result.get("error"):
        return "ERROR"
    if result["test_mode"] == "AccuracyOnly":
        passed = result.get("accuracy_passed")
        return "-" if passed is None else ("PASS" if passed else "FAIL")
    word = "VALID" if result.get("result_valid") else "INVALID"
    return word + (" (short run)" if result.get("shortened_run") else "")


def results_table(results: Iterable[dict[str, Any]]) -> str:
    header = ("scenario", "config_ver", "mode", "samples/s", "pairs/s", "p99 ms", "AUC %", "ratio %", "result")
    rows = [header]
    for r in results:
        rows.append((
            r["scenario"], r["config_ver"], r["test_mode"].replace("Only", ""),
            _fmt(r.get("samples_per_second"), ",.1f"), _fmt(r.get("pairs_per_second"), ",.0f"),
            _fmt(r.get("latency_p99_ms"), ".2f"),
            _fmt(None if r.get("auc") is None else 100 * r["auc"], ".4f"),
            _fmt(None if r.get("auc_ratio") is None else 100 * r["auc_ratio"], ".3f"),
            verdict(r),
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
