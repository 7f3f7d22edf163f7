"""check-data: lists missing day files, names the source, exit status."""

from __future__ import annotations

import argparse
import gzip

from dlrm_bench.cli import main as cli_main
from dlrm_bench.criteo.download import DATASET_URL, check_days, main


def test_complete_plain_and_gz_is_ok(tmp_path, capsys):
    for k in range(24):
        if k % 2:
            (tmp_path / f"day_{k}.gz").write_bytes(gzip.compress(b"0\t1\n"))
        else:
            (tmp_path / f"day_{k}").write_text("0\t1\n")
    assert main(argparse.Namespace(raw_dir=tmp_path)) == 0
    assert "all 24 day files present" in capsys.readouterr().out


def test_missing_and_empty_days_are_listed(tmp_path, capsys):
    for k in range(20):
        (tmp_path / f"day_{k}").write_text("x")
    (tmp_path / "day_3").write_text("")
    assert main(argparse.Namespace(raw_dir=tmp_path)) == 1
    out = capsys.readouterr().out
    assert "19 of 24 day files present" in out
    for name in ("day_20", "day_21", "day_22", "day_23"):
        assert f"  {name}: missing" in out
    assert "day_3: empty file" in out and "day_2:" not in out
    assert DATASET_URL in out and "Criteo 1TB Click Logs" in out
    assert [s.name for s in check_days(tmp_path) if not s.ok] == ["day_3", "day_20", "day_21", "day_22", "day_23"]


def test_cli_uses_scratch_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path))
    assert cli_main(["check-data"]) == 1
    out = capsys.readouterr().out
    assert str(tmp_path / "data" / "criteo") in out and "day_0: missing" in out
