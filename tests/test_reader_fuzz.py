"""Fuzzing the raw-day reader (criteo/reader.py) with hypothesis: whatever the bytes, `read_day` either returns
exactly what a plain line-by-line reading of the format rules gives, or raises DataError naming the file and the
first bad line; nothing else (no other exception, no silently accepted malformed row).

The oracle below restates docs/FORMATS.md "Raw days" and the reader's documented rules in plain Python.
DLRM_BENCH_FUZZ_EXAMPLES=5000 runs a deeper campaign (default 150 examples per test).
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
import zlib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlrm_bench.criteo.reader import INT32_MAX, MAX_COUNT_DIGITS, MAX_LINE_BYTES
from tests.reader_helpers import read_day
from dlrm_bench.errors import DataError

_COUNT = re.compile(rb"(-?)([0-9]+)")
_HEX = re.compile(rb"[0-9a-fA-F]{8}")


def oracle_line(line: bytes, max_ind_range: int) -> tuple[int, list[int], list[int]] | None:
    """One line (without its LF; a final CR is the CRLF ending) -> (label, counts, hashed) or None if bad."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if any((b < 0x20 and b != 0x09) or b >= 0x80 for b in line):
        return None
    fields = line.split(b"\t")
    if len(fields) > 40:
        return None
    fields += [b""] * (40 - len(fields))
    if fields[0] not in (b"0", b"1"):
        return None
    counts = []
    for f in fields[1:14]:
        m = _COUNT.fullmatch(f)
        if f and (m is None or len(m.group(2)) > MAX_COUNT_DIGITS):
            return None
        counts.append(0 if not f or m.group(1) else min(int(m.group(2)), INT32_MAX))
    sparse = []
    for f in fields[14:]:
        if f and not _HEX.fullmatch(f):
            return None
        sparse.append(int(f, 16) % max_ind_range if f else 0)
    return int(fields[0]), counts, sparse


def oracle(data: bytes, max_ind_range: int) -> list[tuple[int, tuple | None]]:
    """(1-based line number, parsed or None) for every line of a file's bytes."""
    if not data:
        return []
    if not data.endswith(b"\n"):
        data += b"\n"
    return [(n, oracle_line(line, max_ind_range)) for n, line in enumerate(data.split(b"\n")[:-1], 1)]


def check(data: bytes, max_ind_range: int, chunk: int, compress: bool = False) -> None:
    """The reader against the oracle, strict and with skip_bad_rows.

    A line longer than MAX_LINE_BYTES can never be a valid row (those are < 600 bytes): the reader either stops
    with a DataError about it or (depending on where it falls in a block) treats it as a bad row."""
    lines = oracle(data, max_ind_range)
    too_long = any(len(line) > MAX_LINE_BYTES - 64 for line in data.split(b"\n"))
    good = [p for _, p in lines if p is not None]
    bad = [n for n, p in lines if p is None]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("day_0.gz" if compress else "day_0")
        path.write_bytes(gzip.compress(data) if compress else data)
        for skip in (False, True):
            try:
                chunk_out, stats = read_day(path, max_ind_range, skip_bad_rows=skip, chunk_bytes=chunk)
            except DataError as exc:
                message = str(exc)
                assert str(path) in message
                assert too_long or (bad and not skip), message
                if not too_long:
                    assert message.startswith(f"{path}:{bad[0]}: "), (message, bad[:3])
                continue
            assert skip or not bad
            assert stats.bad_rows == (len(bad) if skip else 0)
            assert stats.rows == len(good) == len(chunk_out)
            _equal(chunk_out, good)


def _equal(chunk, good: list[tuple]) -> None:
    labels = np.array([g[0] for g in good], dtype=np.int64)
    counts = np.array([g[1] for g in good], dtype=np.int64).reshape(-1, 13)
    sparse = np.array([g[2] for g in good], dtype=np.int64).reshape(-1, 26)
    np.testing.assert_array_equal(chunk.labels.astype(np.int64), labels)
    np.testing.assert_array_equal(chunk.counts.astype(np.int64), counts)
    np.testing.assert_array_equal(chunk.sparse.astype(np.int64), sparse)


# ----------------------------------------------------------------------------------------------------------------
# Strategies: near-valid rows with every kind of damage, and raw bytes

_digits = st.text("0123456789", min_size=1, max_size=21)
_count = st.one_of(st.just(""), _digits, _digits.map(lambda d: "-" + d), st.sampled_from(
    ["-", "+1", "1.5", " 1", "1 ", "0x10", "--1", "1-", "2147483648", "99999999999", "-0", "٣"]))
_hex8 = st.text("0123456789abcdefABCDEF", min_size=8, max_size=8)
_category = st.one_of(st.just(""), _hex8, st.text("0123456789abcdef", min_size=1, max_size=12),
                      _hex8.map(lambda h: h[:4] + "g" + h[5:]), _hex8.map(lambda h: " " + h[1:]))
_label = st.sampled_from(["0", "1", "0", "1", "", "2", "01", "a", " 1", "1\r"])
_junk = st.sampled_from([b"\x00", b"\r", b"\x7f", b"\x80", b"\xff", b"\xc3\xa9", b"\x0b", b"\t", b"\t\t", b"\n",
                         b"\r\n", b" "])


@st.composite
def rows(draw) -> bytes:
    """One row: label, 13 counts, 26 categories (any field possibly damaged), trailing fields possibly dropped or
    extra ones added, and possibly junk bytes spliced in anywhere."""
    fields = [draw(_label)] + [draw(_count) for _ in range(13)] + [draw(_category) for _ in range(26)]
    cut = draw(st.integers(0, 45))
    fields = fields[:max(1, cut)] if cut <= 40 else fields + ["1"] * (cut - 40)
    line = "\t".join(fields).encode("utf-8")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(_junk) + line[at:]
    return line + draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))


_files = st.lists(rows(), max_size=25).map(b"".join)
_ranges = st.sampled_from([1, 3, 1000, 40_000_000, 2 ** 31])
_chunks = st.integers(1024, 3000)
EXAMPLES = int(os.environ.get("DLRM_BENCH_FUZZ_EXAMPLES", "150"))
_settings = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(data=_files, max_ind_range=_ranges, chunk=_chunks, trim=st.booleans())
def test_damaged_rows(data, max_ind_range, chunk, trim):
    check(data.rstrip(b"\n") if trim else data, max_ind_range, chunk)


@_settings
@given(data=st.binary(max_size=3000), max_ind_range=_ranges, chunk=_chunks)
def test_arbitrary_bytes(data, max_ind_range, chunk):
    check(data, max_ind_range, chunk)


@settings(max_examples=max(10, EXAMPLES // 3), deadline=None)
@given(data=_files, max_ind_range=_ranges)
def test_gzip_days(data, max_ind_range):
    check(data, max_ind_range, 2048, compress=True)


@settings(max_examples=max(10, EXAMPLES // 3), deadline=None)
@given(data=_files.filter(bool), cut=st.integers(0, 400), flips=st.lists(st.integers(0, 10 ** 6), max_size=3))
def test_corrupt_gzip_is_a_data_error(data, cut, flips):
    """Truncated or damaged .gz files: DataError, or (if zlib still yields text) the oracle's reading of it."""
    packed = bytearray(gzip.compress(data))
    for at in flips:
        packed[at % len(packed)] ^= 0x5A
    packed = bytes(packed[:max(0, len(packed) - cut)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "day_0.gz"
        path.write_bytes(packed)
        try:
            chunk, stats = read_day(path, 1000, skip_bad_rows=True)
        except DataError as exc:
            assert str(path) in str(exc)
            return
    try:
        text = zlib.decompress(packed, wbits=31)
    except zlib.error:
        text = None
    if text is not None:
        good = [p for _, p in oracle(text, 1000) if p is not None]
        _equal(chunk, good)


@settings(max_examples=10, deadline=None)
@given(length=st.integers(MAX_LINE_BYTES + 1, 3 * MAX_LINE_BYTES), at=st.integers(0, 3), chunk=_chunks)
def test_overlong_lines_are_a_data_error(length, at, chunk):
    good = b"1" + b"\t" * 39 + b"\n"
    data = good * at + b"0\t" + b"7" * length + b"\n" + good
    check(data, 1000, chunk)
