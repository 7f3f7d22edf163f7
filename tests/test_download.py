"""check-data (lists missing day files, names the source, exit status) and download-model (resumable, MD5-checked
download from a real HTTP server on loopback; no test reaches the internet)."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from dlrm_bench import download as dl
from dlrm_bench.cli import main as cli_main
from dlrm_bench.criteo.download import DATASET_URL, check_days, main
from dlrm_bench.errors import UserError


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


def test_directory_and_empty_gz_days_are_named(tmp_path, capsys):
    for k in range(24):
        (tmp_path / f"day_{k}").write_text("0\t1\n")
    (tmp_path / "day_3").unlink()
    (tmp_path / "day_3").mkdir()
    (tmp_path / "day_5").unlink()
    (tmp_path / "day_5.gz").write_bytes(gzip.compress(b""))
    assert main(argparse.Namespace(raw_dir=tmp_path)) == 1
    out = capsys.readouterr().out
    assert "22 of 24 day files present" in out
    assert f"day_3: is a directory, expected a day file day_3 or day_3.gz ({tmp_path / 'day_3'})" in out
    assert "day_5: empty file" in out and str(tmp_path / "day_5.gz") in out


def test_cli_uses_scratch_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path))
    assert cli_main(["check-data"]) == 1
    out = capsys.readouterr().out
    assert str(tmp_path / "data" / "criteo") in out and "day_0: missing" in out


# ------------------------------------------------------------------------------------------------------------------
# download-model: a real HTTP server on loopback (http.server in a thread) serving a small file with Range support.

PAYLOAD = bytes((i * 7 + i // 251) % 256 for i in range(3 * 1024 * 1024 + 12345))  # ~3 MiB, 3+ blocks
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class FileServer:
    """ThreadingHTTPServer on 127.0.0.1 serving `payload` at /model.pt.

    ranges: honour `Range: bytes=N-` with 206 + Content-Range (416 past the end), and `If-Range` against the ETag;
    cut_after: on the next full or ranged GET, send the headers for the whole rest, then only this many body bytes
    and drop the connection (an interrupted transfer); requests: (method, Range header, bytes sent) per request.
    """

    def __init__(self, payload: bytes, ranges: bool = True, etag: str = '"v1"') -> None:
        self.payload, self.ranges, self.etag = payload, ranges, etag
        self.cut_after: list[int] = []
        self.requests: list[tuple[str, str | None, int]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                server.handle(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/model.pt"

    def handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        if h.path != "/model.pt":
            self.requests.append(("GET", h.headers.get("Range"), 0))  # before answering: the client may check
            h.send_error(404, "Not Found")
            return
        size, start = len(self.payload), 0
        header = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if self.ranges and header and (if_range is None or if_range == self.etag):
            start = int(header.split("=")[1].rstrip("-"))
            if start >= size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                self.requests.append(("GET", header, 0))
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(size - start))
        h.send_header("ETag", self.etag)
        h.end_headers()
        body = self.payload[start:]
        if self.cut_after:
            body = body[:self.cut_after.pop(0)]
        h.wfile.write(body)
        h.wfile.flush()
        self.requests.append(("GET", header, len(body)))
        if len(body) < size - start:
            h.close_connection = True

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def fetch(server: FileServer, dest: Path, md5: str = PAYLOAD_MD5, **kw) -> Path:
    kw.setdefault("retries", 0)
    return dl.download(server.url, dest, md5, progress=False, log=lambda _: None, wait=lambda _: None,
                       timeout=10, **kw)


def test_full_download_is_verified_then_renamed(tmp_path):
    dest = tmp_path / "models" / "tb00_40M.pt"
    with FileServer(PAYLOAD) as server:
        assert fetch(server, dest) == dest
    assert dest.read_bytes() == PAYLOAD
    assert not dl.part_path(dest).exists() and not dl.state_path(dest).exists()
    assert dl.verified_path(dest).read_text().split()[0] == PAYLOAD_MD5
    assert [r[1] for r in server.requests] == [None]


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    dest = tmp_path / "tb00_40M.pt"
    cut = 1_300_000
    with FileServer(PAYLOAD) as server:
        server.cut_after = [cut]
        with pytest.raises(UserError, match="run the same command again to resume"):
            fetch(server, dest)
        assert not dest.exists()
        assert dl.part_path(dest).stat().st_size == cut
        fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[1][1] == f"bytes={cut}-"
    assert sum(r[2] for r in server.requests) == len(PAYLOAD)  # nothing was fetched twice


def test_dropped_connections_are_retried_within_one_call(tmp_path):
    dest = tmp_path / "m.pt"
    with FileServer(PAYLOAD) as server:
        server.cut_after = [100_000, 2_000_000]
        fetch(server, dest, retries=3)
    assert dest.read_bytes() == PAYLOAD
    assert [r[1] for r in server.requests] == [None, "bytes=100000-", "bytes=2100000-"]


def test_checksum_mismatch_leaves_nothing_under_the_final_name(tmp_path, capsys):
    dest = tmp_path / "m.pt"
    with FileServer(PAYLOAD) as server:
        with pytest.raises(UserError, match=rf"MD5 mismatch: .*{PAYLOAD_MD5}.*nothing was written to"):
            fetch(server, dest, md5="0" * 32)
        assert not dest.exists() and not dl.part_path(dest).exists()
        # the same through the CLI: one line on stderr, exit status 2
        status = cli_main(["download-model", "--url", server.url, "--output", str(dest), "--md5", "1" * 32,
                           "--retries", "0"])
    err = capsys.readouterr().err
    assert status == 2 and "MD5 mismatch" in err and "Traceback" not in err and not dest.exists()


def test_corrupt_partial_file_is_caught_by_the_checksum(tmp_path):
    dest = tmp_path / "m.pt"
    dl.part_path(dest).write_bytes(b"\xff" * 5000)  # a stale part of some other file, recorded as ours
    with FileServer(PAYLOAD) as server:
        dl.state_path(dest).write_text(json.dumps({"url": server.url, "etag": server.etag}))
        with pytest.raises(UserError, match="MD5 mismatch"):
            fetch(server, dest)
        assert not dest.exists() and not dl.part_path(dest).exists()
        fetch(server, dest)  # a fresh attempt then succeeds
    assert dest.read_bytes() == PAYLOAD


def test_changed_remote_file_restarts_from_zero(tmp_path):
    dest = tmp_path / "m.pt"
    with FileServer(PAYLOAD) as server:
        server.cut_after = [500_000]
        with pytest.raises(UserError):
            fetch(server, dest)
        server.etag = '"v2"'  # If-Range no longer matches: the server sends the whole file
        fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[1][1] == "bytes=500000-" and server.requests[1][2] == len(PAYLOAD)


def test_server_without_range_support_restarts(tmp_path):
    dest = tmp_path / "m.pt"
    with FileServer(PAYLOAD, ranges=False) as server:
        server.cut_after = [700_000]
        fetch(server, dest, retries=1)
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_is_finished_without_a_body(tmp_path):
    dest = tmp_path / "m.pt"
    dl.part_path(dest).write_bytes(PAYLOAD)
    with FileServer(PAYLOAD) as server:
        fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD and server.requests[0][2] == 0  # answered 416
    assert not dl.state_path(dest).exists()


def test_existing_file_is_checked_not_downloaded(tmp_path, capsys):
    dest = tmp_path / "m.pt"
    dest.write_bytes(PAYLOAD)
    with FileServer(PAYLOAD) as server:
        fetch(server, dest)
        assert server.requests == []
        dest.write_bytes(PAYLOAD[:-1] + b"x")  # someone's other weights: never overwritten silently
        with pytest.raises(UserError, match="--force"):
            fetch(server, dest)
        fetch(server, dest, force=True)
    assert dest.read_bytes() == PAYLOAD


def test_http_error_and_unreachable_server_are_named(tmp_path):
    with FileServer(PAYLOAD) as server:
        with pytest.raises(UserError, match="HTTP 404"):
            dl.download(server.url.replace("model.pt", "nothing"), tmp_path / "m.pt", PAYLOAD_MD5, retries=0,
                        progress=False, log=lambda _: None)
        port = server.httpd.server_address[1]
    with pytest.raises(UserError, match=rf"127.0.0.1:{port} refused"):
        dl.download(f"http://127.0.0.1:{port}/model.pt", tmp_path / "m.pt", PAYLOAD_MD5, retries=0,
                    progress=False, log=lambda _: None, timeout=2)


def fail_fast(url: str, dest: Path) -> tuple[str, list[float]]:
    """download() with 5 retries allowed: (the UserError's message, the retry pauses it asked for)."""
    waits: list[float] = []
    with pytest.raises(UserError) as info:
        dl.download(url, dest, PAYLOAD_MD5, retries=5, progress=False, log=lambda _: None, wait=waits.append,
                    timeout=5)
    return str(info.value), waits


def test_unresolvable_host_fails_at_once_without_naming_a_part(tmp_path):
    started = time.monotonic()
    message, waits = fail_fast("http://nonexistent.invalid/tb00_40M.pt", tmp_path / "m.pt")
    assert time.monotonic() - started < 10 and waits == []
    assert "cannot resolve host nonexistent.invalid" in message and ".part" not in message
    assert "\n" not in message and not dl.part_path(tmp_path / "m.pt").exists()


def test_http_404_and_invalid_url_are_not_retried(tmp_path):
    with FileServer(PAYLOAD) as server:
        message, waits = fail_fast(server.url.replace("model.pt", "nothing"), tmp_path / "m.pt")
    assert waits == [] and len(server.requests) == 1
    assert "HTTP 404" in message and "/nothing" in message and ".part" not in message
    message, waits = fail_fast("htp://example/m.pt", tmp_path / "m.pt")
    assert waits == [] and "invalid URL" in message


def test_server_errors_are_retried_and_the_part_is_named_with_its_size(tmp_path):
    dest = tmp_path / "m.pt"
    with FileServer(PAYLOAD) as server:
        server.cut_after = [200_000]
        with pytest.raises(UserError):
            fetch(server, dest)
        server.handle = lambda h: h.send_error(500, "Internal Server Error")  # every request fails now
        message, waits = fail_fast(server.url, dest)
    assert waits == list(dl.RETRY_WAIT_S) and "HTTP 500" in message
    assert f"{dl.part_path(dest)} holds 200,000 bytes" in message and "run the same command again" in message


def test_local_write_error_names_the_file_without_retrying(tmp_path):
    (tmp_path / "models").write_text("not a folder")
    with FileServer(PAYLOAD) as server:
        message, waits = fail_fast(server.url, tmp_path / "models" / "m.pt")
    assert waits == [] and server.requests == []
    assert message.startswith(f"{tmp_path / 'models'}: ") and "local file error" in message


def test_cli_defaults_name_the_official_model(tmp_path, monkeypatch, capsys):
    assert dl.MODEL_URL == "https://dlrm.s3-us-west-1.amazonaws.com/models/tb00_40M.pt"
    assert dl.MODEL_MD5 == "2d49a5288cddb37c3c64860a06d79bb9"
    monkeypatch.setenv("MLPERF_SCRATCH_PATH", str(tmp_path))
    with FileServer(PAYLOAD) as server:
        assert cli_main(["download-model", "--url", server.url, "--md5", PAYLOAD_MD5]) == 0
    assert (tmp_path / "models" / "dlrm" / "tb00_40M.pt").read_bytes() == PAYLOAD
    assert "tb00_40M.pt" in capsys.readouterr().out
