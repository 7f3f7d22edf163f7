"""Preflight: a long step whose disk or memory needs exceed what this machine has stops before it starts, with a
one-line error naming the step, the folder or the memory, and the amounts. The probes are real (the actual free
space and available RAM); the requests are sized from them so that they cannot fit."""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import threading
from pathlib import Path

import pytest

from dlrm_bench import preflight
from dlrm_bench.cli import main as cli
from dlrm_bench.criteo.synthetic import generate_days
from dlrm_bench.errors import UserError


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def write_meta(folder: Path, cardinalities: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps({"format": 1, "name": "big", "cardinalities": cardinalities,
                                                  "test_rows": 10, "fingerprint": "x"}))
    return folder


def test_generate_data_larger_than_the_disk(tmp_path, capsys):
    out = tmp_path / "raw"
    assert cli(["generate-data", "--output", str(out), "--days", "2", "--rows-per-day", str(10 ** 12)]) == 2
    err = error_line(capsys)
    assert "generate-data needs about" in err and "free disk space in" in err and str(out) in err
    assert "2 day files x 1,000,000,000,000 rows" in err and "DLRM_BENCH_SKIP_PREFLIGHT" in err
    assert not out.exists()  # nothing was started


def test_preprocess_output_larger_than_the_disk(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    free = preflight.free_disk(tmp_path)
    with open(raw / "day_0", "wb") as f:  # sparse: takes no space, but says how many rows are coming
        f.truncate(3 * free)
    (raw / "day_1").write_text("0\t1\t2\n" * 10)
    out = tmp_path / "out"
    assert cli(["preprocess", "--raw-dir", str(raw), "--output", str(out)]) == 2
    err = error_line(capsys)
    assert "preprocess needs about" in err and str(out) in err and "split arrays of" in err
    assert not out.exists()


def test_preprocess_workers_beyond_the_memory(tmp_path, capsys):
    r = 2 ** 31
    per_worker = 30 * r + 512 * preflight.MiB
    days = preflight.available_ram() // per_worker + 2
    raw = tmp_path / "raw"
    raw.mkdir()
    for k in range(days):
        (raw / f"day_{k}").write_text("0\t1\n")
    assert cli(["preprocess", "--raw-dir", str(raw), "--output", str(tmp_path / "out"), "--max-ind-range", str(r),
                "--workers", str(days)]) == 2
    err = error_line(capsys)
    assert "preprocess needs about" in err and "of RAM" in err and f"{days} worker(s)" in err
    assert "max_ind_range 2,147,483,648" in err


def test_train_tables_beyond_memory_or_disk(tmp_path, capsys):
    """Tables of about 0.75 x the available RAM: training holds them twice, so RAM is short; if the disk is
    shorter still (a small-disk machine), the disk is named instead."""
    table_bytes = int(0.75 * preflight.available_ram())
    rows = table_bytes // 512
    cards = [rows // 26] * 26
    data = write_meta(tmp_path / "data", cards)
    out = tmp_path / "m.pt"
    assert cli(["train", "--dataset-dir", str(data), "--output", str(out)]) == 2
    err = error_line(capsys)
    disk_short = (rows // 26) * 26 * 512 + preflight.MLP_BYTES + preflight.DISK_SLACK > preflight.free_disk(tmp_path)
    assert "train needs about" in err
    assert (("free disk space" in err and "checkpoint m.pt" in err) if disk_short
            else ("of RAM" in err and "held twice" in err))


def test_generate_engines_tables_larger_than_the_disk(tmp_path, capsys):
    import torch

    free = preflight.free_disk(tmp_path)
    data = write_meta(tmp_path / "data", [free // (128 * 26) + 1] * 26)
    model = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, model)
    assert cli(["generate-engines", "--dataset-dir", str(data), "--model", str(model)]) == 2
    err = error_line(capsys)
    assert "generate-engines needs about" in err and str(tmp_path / "model") in err and "int8 tables of" in err


def test_random_preset_larger_than_the_disk(tmp_path, capsys):
    out = tmp_path / "preset"
    pairs = preflight.free_disk(tmp_path) // preflight.PRESET_ROW_BYTES + 10 ** 6
    assert cli(["make-random-preset", "--what", "data", "--output", str(out), "--num-pairs", str(pairs),
                "--device", "cpu"]) == 2
    err = error_line(capsys)
    assert "make-random-preset needs about" in err and f"{pairs:,} test pairs" in err
    assert not out.exists()


def test_small_steps_pass_and_the_check_can_be_skipped(tmp_path, monkeypatch):
    args = argparse.Namespace(command="generate-data", scale="tiny", days=1, rows_per_day=10 ** 12, gzip=False,
                              output=tmp_path / "raw")
    with pytest.raises(UserError, match="generate-data needs"):
        preflight.run(args)
    monkeypatch.setenv(preflight.SKIP_ENV, "1")
    preflight.run(args)  # skipped: no error
    monkeypatch.delenv(preflight.SKIP_ENV)
    preflight.run(argparse.Namespace(**{**vars(args), "rows_per_day": 1000}))
    preflight.run(argparse.Namespace(command="preprocess", raw_dir=tmp_path / "nowhere", output=None, name="x",
                                     max_ind_range=10, workers=None, compress=False))  # the step will say it


def test_row_estimates_of_plain_and_gzip_days(tmp_path):
    plain = generate_days(tmp_path / "plain", "tiny", seed=1, num_days=1, rows_per_day=6000)[0]
    packed = generate_days(tmp_path / "gz", "tiny", seed=1, num_days=1, rows_per_day=6000, gzip=True)[0]
    assert preflight.estimate_rows(plain) == pytest.approx(6000, rel=0.02)
    assert preflight.estimate_rows(packed) == pytest.approx(6000, rel=0.1)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"x")[:-8] + b"garbage!")
    assert preflight.estimate_rows(tmp_path / "bad.gz") >= 0
    assert preflight.human(3 * 2 ** 30) == "3.0 GiB" and preflight.human(12) == "12 B"


class _HugeFile(http.server.BaseHTTPRequestHandler):
    """Announces a file far larger than any disk, then sends nothing."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(10 ** 17))
        self.end_headers()


def test_download_checks_the_disk_before_the_transfer(tmp_path, capsys):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HugeFile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tb00_40M.pt"
        assert cli(["download-model", "--url", url, "--output", str(tmp_path / "m.pt"), "--retries", "0"]) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = error_line(capsys)
    assert "download-model needs about" in err and "the rest of m.pt" in err
    assert not (tmp_path / "m.pt").exists()
