"""bench_inputs.write_report: the benchmarks' JSON reports, written whole or not at all."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_inputs import write_report  # noqa: E402


def test_a_report_replaces_the_old_one_and_leaves_no_temporary(tmp_path) -> None:
    out = tmp_path / "new" / "dir"
    write_report(out, "bench_x.json", {"old": 1})
    path = write_report(out, "bench_x.json", {"pairs": 262144, "rates": [1.5, 2.5]})
    assert path == out / "bench_x.json"
    assert json.loads(path.read_text()) == {"pairs": 262144, "rates": [1.5, 2.5]}
    assert sorted(p.name for p in out.iterdir()) == ["bench_x.json"]


def test_a_report_that_cannot_be_encoded_keeps_the_old_file(tmp_path) -> None:
    write_report(tmp_path, "bench_x.json", {"old": 1})
    with pytest.raises(TypeError):
        write_report(tmp_path, "bench_x.json", {"bad": object()})
    assert json.loads((tmp_path / "bench_x.json").read_text()) == {"old": 1}
