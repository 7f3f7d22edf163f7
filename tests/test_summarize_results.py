"""benchmarks/summarize_results.py: one line per run from result.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import summarize_results as sr  # noqa: E402


def _result(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"scenario": "Offline", "config_ver": "default", "test_mode": "PerformanceOnly",
                                "samples_per_second": 713135.0, "result_validity": "VALID",
                                "latency_p99_ms": 32988.7, "interpreter_pauses": {"stalls": 4, "stall_max_ms": 8.4},
                                "settings": {"gpu_batch_size": 262144}, **fields}))
    return path


def test_an_offline_line_names_when_the_first_result_came(tmp_path: Path) -> None:
    line = sr.line(sr.summarize(_result(tmp_path, latency_min_ms=389.15)))
    assert "713,135/s  VALID  first result 389 ms  stalls 4 (max 8.4 ms)" in line
    assert "p99" not in line


def test_a_run_without_the_field_still_summarizes(tmp_path: Path) -> None:
    line = sr.line(sr.summarize(_result(tmp_path)))
    assert "first result" not in line and "713,135/s" in line
