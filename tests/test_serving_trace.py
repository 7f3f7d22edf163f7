"""Per-request timestamps through a real Triton server (setting triton_trace, triton_server/trace.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlrm_bench.triton_server.trace import PHASES, RequestTrace, format_summary, summarize


def test_trace_joins_both_sides_into_phases(tmp_path: Path) -> None:
    client, stub = RequestTrace(tmp_path / "client.jsonl"), RequestTrace(tmp_path / "stub-0.jsonl")
    for rid in ("1", "2"):
        client.mark(rid, "sent")
        stub.mark(rid, "execute")
        stub.mark(rid, "launch", first=True)
        stub.mark(rid, "launch", first=True)  # a later batch of the same request keeps the first launch
        stub.mark(rid, "engine_done")
        stub.finish(rid, "answered")
        client.finish(rid, "received")
    stub.mark("", "execute")  # a request without an id is not traced
    client.close()
    stub.close()
    lines = [json.loads(line) for line in (tmp_path / "stub-0.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == ["1", "2"]
    summary = summarize(tmp_path)
    assert summary["requests"] == 2
    for phase in PHASES:
        assert summary[phase]["count"] == 2 and summary[phase]["median_ms"] >= 0
    parts = sum(summary[p]["median_ms"] for p in PHASES if p != "total")
    assert parts == pytest.approx(summary["total"]["median_ms"], rel=0.5, abs=0.05)
    assert "to_client" in format_summary(summary)


def test_disabled_trace_writes_nothing(tmp_path: Path) -> None:
    trace = RequestTrace(None)
    trace.mark("1", "sent")
    trace.finish("1", "received")
    trace.close()
    assert not trace.enabled and list(tmp_path.iterdir()) == []
