"""Per-request timestamps through the Triton path, to see where a request's time goes (setting `triton_trace`).

The client (triton_server/client.py) stamps `sent` and `received`; the model in Triton's stub (triton_server/backend.py)
stamps `execute` (its execute() call began), `launch` (its first engine batch was launched), `engine_done` (its
last batch finished) and `answered` (its response was handed to Triton). Both sides use `time.perf_counter`
(CLOCK_MONOTONIC on Linux: one clock for every process of the host) and the request id the client sets, and
append one JSON line per request to their own file under the trace folder. `summarize` joins them into phases:

  to_model   sent -> execute        client, gRPC, Triton's queue, the stub's message queue
  wait_slot  execute -> launch      waiting for a free engine slot (inflight_batches)
  engine     launch -> engine_done  the engine's batches holding this request's pairs
  respond    engine_done -> answered  building the response
  to_client  answered -> received   stub -> server -> gRPC -> the client's callback
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

PHASES = {"to_model": ("sent", "execute"), "wait_slot": ("execute", "launch"), "engine": ("launch", "engine_done"),
          "respond": ("engine_done", "answered"), "to_client": ("answered", "received"),
          "total": ("sent", "received")}


class RequestTrace:
    """Timestamps per request id, one JSON line per request written when `finish` is called for it.
    A trace without a path records nothing (every call returns at once)."""

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path else None
        self.records: dict[str, dict[str, float]] = {}
        self.lock = threading.Lock()
        self.file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a", buffering=1)

    @property
    def enabled(self) -> bool:
        return self.file is not None

    def mark(self, request_id: str, stamp: str, first: bool = False) -> None:
        """Record `stamp` = now for `request_id` (first=True keeps an earlier value); requests without an id
        (other clients) are not traced."""
        if self.file is None or not request_id:
            return
        now = time.perf_counter()
        with self.lock:
            record = self.records.setdefault(request_id, {})
            if not (first and stamp in record):
                record[stamp] = now

    def finish(self, request_id: str, stamp: str) -> None:
        """Record the last stamp of `request_id` and write its line."""
        if self.file is None or not request_id:
            return
        self.mark(request_id, stamp)
        with self.lock:
            record = self.records.pop(request_id, {})
            self.file.write(json.dumps({"id": request_id, **record}) + "\n")

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None


def read_lines(paths: list[Path]) -> dict[str, dict[str, float]]:
    """id -> merged stamps of every JSON line in `paths` (unreadable lines are skipped)."""
    merged: dict[str, dict[str, float]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            merged.setdefault(str(record.pop("id")), {}).update(record)
    return merged


def summarize(trace_dir: Path, since: float | None = None, until: float | None = None) -> dict[str, Any]:
    """Per phase (PHASES): median, p90, p99 and max milliseconds over the requests with both stamps; only
    requests sent within [since, until] (perf_counter seconds) when given."""
    records = read_lines(sorted(Path(trace_dir).glob("*.jsonl")))
    if since is not None or until is not None:
        lo, hi = since if since is not None else float("-inf"), until if until is not None else float("inf")
        records = {k: r for k, r in records.items() if lo <= r.get("sent", float("nan")) <= hi}
    out: dict[str, Any] = {"requests": len(records)}
    for phase, (start, end) in PHASES.items():
        values = np.array([r[end] - r[start] for r in records.values() if start in r and end in r]) * 1e3
        if values.size:
            out[phase] = {"count": int(values.size), "median_ms": float(np.median(values)),
                          "p90_ms": float(np.percentile(values, 90)), "p99_ms": float(np.percentile(values, 99)),
                          "max_ms": float(values.max())}
    return out


def format_summary(summary: dict[str, Any]) -> str:
    """A small table of summarize()'s result."""
    lines = [f"{'phase':<11}{'requests':>9}{'median ms':>11}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
    for phase in PHASES:
        row = summary.get(phase)
        if row:
            lines.append(f"{phase:<11}{row['count']:>9}{row['median_ms']:>11.3f}{row['p90_ms']:>9.3f}"
                         f"{row['p99_ms']:>9.3f}{row['max_ms']:>9.2f}")
    return "\n".join(lines)
