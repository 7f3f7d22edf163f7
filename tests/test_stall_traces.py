"""benchmarks/stall_traces.py: counting the threads' innermost frames over faulthandler dumps."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import stall_traces  # noqa: E402

from dlrm_bench.interpreter import QuietInterpreter  # noqa: E402
from gil import hold_the_gil  # noqa: E402


def test_a_real_dump_names_the_gil_holder(tmp_path: Path, capsys) -> None:
    path = tmp_path / "stall_traces.txt"
    with QuietInterpreter(watch=True, trace_path=path, trace_after_ms=20):
        time.sleep(0.01)
        hold_the_gil()
        time.sleep(0.01)
    dumps, frames = stall_traces.innermost_frames(path.read_text())
    assert dumps >= 1
    assert any(frame.startswith("gil.py:") and frame.endswith("in hold_the_gil") for frame in frames)
    assert stall_traces.main([str(path), "--top", "3"]) == 0
    assert "stalls; innermost frame" in capsys.readouterr().out


def test_a_file_without_dumps_and_a_missing_file_are_named(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing here\n")
    assert stall_traces.main([str(empty)]) == 2
    assert "holds no faulthandler dump" in capsys.readouterr().err
    assert stall_traces.main([str(tmp_path / "missing.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err
