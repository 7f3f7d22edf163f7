"""`make download_model` / `dlrm-bench download-model`: fetch the MLPerf DLRM checkpoint, resumably, and verify it.

The model is MLCommons' `tb00_40M.pt` (Criteo Terabyte, 40M-row limit; ~90 GB), published by the MLCommons
inference reference (recommendation/dlrm/pytorch/README.md) at MODEL_URL with MD5 MODEL_MD5.

How a download goes:

- bytes go to `<output>.part`; `<output>.part.json` records the URL and the server's ETag / Last-Modified / size;
- a later run (or an automatic retry after a dropped connection) asks for the rest with an HTTP `Range` request
  (`If-Range` makes a server whose file changed send the whole file again, which restarts the download); a server
  that ignores ranges also restarts it;
- the MD5 is computed while the bytes arrive (the part already on disk is hashed once when a run resumes);
- only a file whose MD5 matches is renamed to `<output>`. A mismatch removes the part and leaves nothing under
  the final name; the error says so.

An existing `<output>` is checked (once: `<output>.md5` records the verified size and mtime) and never overwritten
unless `--force`. No disk space? The free space is checked against the bytes still to come before they come.

Only transient failures are retried (a connection dropped mid-transfer, a timeout, HTTP 5xx / 408 / 429); what a
retry cannot fix (unknown host, connection refused, a bad certificate, an invalid URL, other HTTP 4xx, a local
write error) stops at once with one line naming the URL or file and the cause.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from dlrm_bench import paths
from dlrm_bench.atomic import save_json, save_text
from dlrm_bench.errors import UserError
from dlrm_bench.progress import progress_bar

MODEL_NAME = "tb00_40M.pt"
MODEL_URL = "https://dlrm.s3-us-west-1.amazonaws.com/models/tb00_40M.pt"
MODEL_MD5 = "2d49a5288cddb37c3c64860a06d79bb9"
CHUNK_BYTES = 1 << 20
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT_S = 60.0
RETRY_WAIT_S = (1.0, 5.0, 15.0, 30.0, 60.0)
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")

Log = Callable[[str], None]


class _Retryable(Exception):
    """A transfer that stopped early (connection dropped, timeout, short body): worth another request."""


class _Fatal(Exception):
    """A failure another request cannot fix (unknown host, refused connection, HTTP 4xx, invalid URL).

    `unreachable`: the host could not be reached (unknown, refused), which is retried only after a transient
    failure earlier in the same call (the network went away during the download)."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass
class _Response:
    """What one request returned: where the body starts in the file, the file's size, validators."""

    start: int
    total: int | None
    etag: str | None
    last_modified: str | None


class _Hasher:
    """MD5 of the part file's bytes [0, covered); catches up by reading the file when a resume skips ahead."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5()
        self.covered = 0

    def reset(self) -> None:
        self.__init__()

    def catch_up(self, part: Path, upto: int, progress: bool) -> None:
        """Hash the part's bytes [covered, upto) from disk (once, when resuming a download from an earlier run)."""
        if upto <= self.covered:
            if upto < self.covered:
                self.reset()
                self.catch_up(part, upto, progress)
            return
        with open(part, "rb") as f, progress_bar(total=upto, initial=self.covered, unit="B", unit_scale=True,
                                         desc="checking partial download", disable=not progress) as bar:
            f.seek(self.covered)
            while self.covered < upto:
                block = f.read(min(CHUNK_BYTES, upto - self.covered))
                if not block:
                    raise UserError(f"{part}: shorter than expected while hashing; remove it and run again")
                self.update(block)
                bar.update(len(block))

    def update(self, block: bytes) -> None:
        self.md5.update(block)
        self.covered += len(block)


# ----------------------------------------------------------------------------------------------------------------
# Files next to the download


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def state_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def verified_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".md5")


def _load_state(dest: Path, url: str) -> dict:
    """The recorded validators of the part file, or {} (a part from another URL does not count)."""
    try:
        state = json.loads(state_path(dest).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("url") == url else {}


def file_md5(path: Path, progress: bool = True, desc: str = "verifying MD5") -> str:
    """Hex MD5 of a file, read in 1 MiB blocks, with a progress bar."""
    md5 = hashlib.md5()
    with open(path, "rb") as f, progress_bar(total=path.stat().st_size, unit="B", unit_scale=True, desc=desc,
                                     disable=not progress) as bar:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            md5.update(block)
            bar.update(len(block))
    return md5.hexdigest()


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def verify_existing(dest: Path, md5: str, progress: bool = True) -> bool:
    """True when `dest` has the expected MD5 (remembered in `<dest>.md5` for its size and mtime)."""
    marker = verified_path(dest)
    with contextlib.suppress(OSError):
        if marker.read_text().split() == [md5, *_stat_key(dest).split()]:
            return True
    if file_md5(dest, progress) != md5:
        return False
    save_text(marker, f"{md5} {_stat_key(dest)}\n")
    return True


# ----------------------------------------------------------------------------------------------------------------
# HTTP


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000); unparseable -> (None, None)."""
    m = _CONTENT_RANGE.match(value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _request(url: str, offset: int, state: dict) -> urllib.request.Request:
    headers = {"User-Agent": "dlrm-bench", "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
        validator = state.get("etag") or state.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    return urllib.request.Request(url, headers=headers)


def _describe_response(resp: http.client.HTTPResponse, offset: int) -> _Response:
    """Where this response's body starts (0 = the whole file) and the file's total size."""
    length = resp.headers.get("Content-Length")
    etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
    if resp.status == 206:
        start, total = _parse_content_range(resp.headers.get("Content-Range"))
        if start is None:
            raise _Retryable(f"unparseable Content-Range {resp.headers.get('Content-Range')!r}")
        return _Response(start, total, etag, modified)
    total = int(length) if length is not None and length.isdigit() else None
    return _Response(0, total, etag, modified)


def _open(url: str, offset: int, state: dict, timeout: float) -> tuple[http.client.HTTPResponse | None, int | None]:
    """Open the URL from `offset`. (response, None), or (None, total) when the server says the range is past the
    end (HTTP 416: the part may already be complete). Errors a retry cannot fix raise UserError."""
    try:
        return urllib.request.urlopen(_request(url, offset, state), timeout=timeout), None
    except urllib.error.HTTPError as exc:
        if exc.code == 416:
            _, total = _parse_content_range(exc.headers.get("Content-Range"))
            return None, total
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise _Fatal(f"HTTP {exc.code} {exc.reason}; check the URL (--url)") from None
    except (ValueError, http.client.InvalidURL) as exc:
        raise _Fatal(f"invalid URL ({exc})") from None
    except urllib.error.URLError as exc:
        raise _connect_error(url, exc.reason) from None
    except (http.client.HTTPException, OSError) as exc:
        raise _connect_error(url, exc) from None


def _connect_error(url: str, reason: object) -> Exception:
    """A failed connection as _Fatal (unknown host, refused, bad certificate, bad URL) or _Retryable (the rest)."""
    host = urllib.parse.urlsplit(url).netloc or url
    if isinstance(reason, socket.gaierror):
        return _Fatal(f"cannot resolve host {host} ({reason.strerror}); check the URL and the network (DNS, proxy)",
                      unreachable=True)
    if isinstance(reason, ConnectionRefusedError):
        return _Fatal(f"connection to {host} refused (no server listens there; check the URL and any proxy)",
                      unreachable=True)
    if isinstance(reason, ssl.SSLCertVerificationError):
        return _Fatal(f"TLS certificate of {host} not accepted ({reason.verify_message})")
    if isinstance(reason, str):
        return _Fatal(f"invalid URL ({reason})")
    return _Retryable(f"cannot connect to {host} ({reason})")


def _body(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    """The response body in blocks; a dropped connection or timeout mid-body is _Retryable."""
    try:
        while block := resp.read(CHUNK_BYTES):
            yield block
    except (socket.timeout, ConnectionError, http.client.HTTPException, OSError) as exc:
        raise _Retryable(f"connection lost ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------------------------------------------
# One attempt, and the loop around it


def _check_space(dest: Path, needed: int) -> None:
    from dlrm_bench.preflight import require_disk

    require_disk("download-model", dest.parent, needed, f"the rest of {dest.name}")


def _attempt(url: str, dest: Path, hasher: _Hasher, timeout: float, progress: bool, log: Log) -> int:
    """One request: append what the server sends to the part file. Returns the part's size when the file is
    complete; raises _Retryable when the transfer stopped early."""
    part = part_path(dest)
    offset = part.stat().st_size if part.exists() else 0
    state = _load_state(dest, url) if offset else {}
    resp, total_416 = _open(url, offset, state, timeout)
    if resp is None:
        if total_416 is not None and total_416 == offset:
            return offset
        log(f"the server has no bytes past {offset:,} of the partial download: starting over")
        part.unlink(missing_ok=True)
        hasher.reset()
        raise _Retryable("range not satisfiable")
    with resp:
        info = _describe_response(resp, offset)
        if info.start != offset:
            if offset:
                log("the server sent the whole file (no range support, or the file changed): starting over")
            offset = 0
            hasher.reset()
        save_json(state_path(dest), {"url": url, "etag": info.etag, "last_modified": info.last_modified,
                                     "total": info.total})
        if info.total is not None:
            _check_space(dest, info.total - offset)
        if offset:
            hasher.catch_up(part, offset, progress)
        else:
            hasher.reset()
        written = _stream(resp, part, offset, info.total, hasher, progress)
    if info.total is not None and written != info.total:
        raise _Retryable(f"got {written:,} of {info.total:,} bytes")
    return written


def _stream(resp: http.client.HTTPResponse, part: Path, offset: int, total: int | None, hasher: _Hasher,
            progress: bool) -> int:
    """Write the body to the part file from `offset`; returns the part's size after."""
    with open(part, "r+b" if offset and part.exists() else "wb") as f, \
            progress_bar(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5],
                 disable=not progress) as bar:
        f.seek(offset)
        f.truncate()
        try:
            for block in _body(resp):
                f.write(block)
                hasher.update(block)
                bar.update(len(block))
        finally:
            f.flush()
            os.fsync(f.fileno())
        return f.tell()


def _finish(dest: Path, hasher: _Hasher, md5: str, size: int, progress: bool) -> None:
    """Rename the part to `dest` if its MD5 matches; otherwise remove it and say so."""
    part = part_path(dest)
    hasher.catch_up(part, size, progress)
    got = hasher.md5.hexdigest()
    if got != md5.lower():
        part.unlink(missing_ok=True)
        state_path(dest).unlink(missing_ok=True)
        raise UserError(f"MD5 mismatch: the downloaded file has {got}, expected {md5.lower()}; it was removed and "
                        f"nothing was written to {dest}. Run again to download it anew (or check --url / --md5)")
    os.replace(part, dest)
    state_path(dest).unlink(missing_ok=True)
    save_text(verified_path(dest), f"{md5.lower()} {_stat_key(dest)}\n")


def _partial_note(dest: Path) -> str:
    """'; the partial file ... is kept ...' when a non-empty part file exists, else ''."""
    try:
        have = part_path(dest).stat().st_size
    except OSError:
        return ""
    return (f"; the partial file {part_path(dest)} holds {have:,} bytes and is kept: run the same command again "
            f"to resume") if have else ""


def download(url: str, dest: Path, md5: str, *, retries: int = DEFAULT_RETRIES,
             timeout: float = DEFAULT_TIMEOUT_S, progress: bool = True, force: bool = False,
             log: Log = print, wait: Callable[[float], None] = time.sleep) -> Path:
    """Download `url` to `dest` (resuming `<dest>.part`), verify its MD5, and return `dest`.

    `retries`: further requests after a transient failure within this call (each resumes where it stopped).
    A local file error (read-only or full folder) is a UserError naming the file.
    """
    dest = Path(dest)
    try:
        return _download(url, dest, md5, retries, timeout, progress, force, log, wait)
    except OSError as exc:
        where = exc.filename or part_path(dest)
        raise UserError(f"{where}: {exc.strerror or exc} (a local file error, which retrying cannot fix; "
                        f"downloading {url}){_partial_note(dest)}") from None


def _download(url: str, dest: Path, md5: str, retries: int, timeout: float, progress: bool, force: bool,
              log: Log, wait: Callable[[float], None]) -> Path:
    """download() without the translation of local file errors."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and not force:
        if verify_existing(dest, md5.lower(), progress):
            log(f"{dest}: already present, MD5 {md5.lower()} verified")
            return dest
        raise UserError(f"{dest} exists but its MD5 is not {md5.lower()}: it is not the expected file. Move it "
                        f"away (or pass --force to replace it) and run again")
    hasher = _Hasher()
    for attempt in range(retries + 1):
        try:
            size = _attempt(url, dest, hasher, timeout, progress, log)
            break
        except (_Fatal, _Retryable) as exc:
            if isinstance(exc, _Fatal) and not (attempt and exc.unreachable):
                raise UserError(f"download of {url} failed: {exc}{_partial_note(dest)}") from None
            if attempt == retries:
                raise UserError(f"download of {url} failed after {attempt + 1} attempt(s): {exc}"
                                f"{_partial_note(dest)}") from None
            pause = RETRY_WAIT_S[min(attempt, len(RETRY_WAIT_S) - 1)]
            log(f"download of {url} interrupted ({exc}); retrying in {pause:g} s (retry {attempt + 1} of {retries})")
            wait(pause)
    _finish(dest, hasher, md5, size, progress)
    log(f"{dest}: {size:,} bytes, MD5 {md5.lower()} verified")
    return dest


def main(args: argparse.Namespace) -> int:
    """`dlrm-bench download-model [--url URL] [--output PATH] [--md5 HEX] [--retries N] [--force]`."""
    dest = Path(args.output) if getattr(args, "output", None) else paths.models_dir() / MODEL_NAME
    md5 = (getattr(args, "md5", None) or MODEL_MD5).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise UserError(f"--md5 must be 32 hex digits, got {md5!r}")
    url = getattr(args, "url", None) or MODEL_URL
    print(f"downloading {url}\n  -> {dest} (MD5 {md5}; resumable: run again after an interruption)", flush=True)
    download(url, dest, md5, retries=int(getattr(args, "retries", DEFAULT_RETRIES)),
             force=bool(getattr(args, "force", False)), progress=True)
    return 0
