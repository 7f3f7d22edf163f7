"""Streaming, vectorised reader of raw Criteo day files (`day_k` or `day_k.gz`, docs/FORMATS.md "Raw days").

A row is `label \\t I1 .. I13 \\t C1 .. C26`: label 0/1, 13 signed decimal counts, 26 categories of 8 hex digits;
any field may be empty, trailing fields may be missing (37 or 38 fields are common; any count from 1 to 40 is
padded with empty fields), and lines may end in CRLF.

A category must be empty or exactly 8 hex digits (either case); a count is an optional '-' and decimal digits.

The file is read in blocks of about `chunk_bytes` bytes (default 1 MiB) cut at a line end; each block is parsed
with numpy only, without a Python loop over rows:

1. every byte below 0x20 or above 0x7F is located in one pass; tabs and line ends give a [lines, 40] table of
   field start and end offsets (missing trailing fields become empty fields at the line end); any other control
   or non-ASCII byte makes its line malformed;
2. each field's first 8 bytes are loaded as one little-endian uint64 (two aligned loads and shifts) and validated
   and converted with SWAR arithmetic on uint64 lanes, 8 characters per operation: hex categories -> uint32 ->
   `% max_ind_range`; decimal counts of up to 8 digits -> int (longer counts, rare, take a slow path).

Memory: the block buffer plus ~40 bytes of temporaries per input byte (~50 MB at 1 MiB blocks), whatever the file
size. `tune_malloc` (called once per process) keeps glibc from returning those temporaries to the kernel between
blocks: page faults otherwise cost more than the parsing. Measured on one core (benchmarks/bench_preprocess.py):
~600k rows/s (~150 MB/s of text) for 40-field rows, ~450k rows/s for rows with dropped trailing fields, ~330k rows/s
from .gz (zlib decompression included).

Malformed rows raise `DataError` naming the file, the 1-based line and the field (label, I1..I13, C1..C26);
with `skip_bad_rows=True` they are dropped and counted in `ReadStats`.
"""

from __future__ import annotations

import ctypes
import gzip
import re
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from dlrm_bench.criteo.schema import DEFAULT_MAX_IND_RANGE, NUM_DENSE, NUM_FIELDS, NUM_SPARSE
from dlrm_bench.errors import DataError, UserError

FIELD_NAMES: tuple[str, ...] = ("label",) + tuple(f"I{i}" for i in range(1, NUM_DENSE + 1)) + tuple(
    f"C{i}" for i in range(1, NUM_SPARSE + 1))
"""Names of the 40 fields, as error messages give them."""

DEFAULT_CHUNK_BYTES = 1 << 20
"""Bytes of text per parsed block (~4,300 rows of real data): small enough that the temporaries stay in cache
(measured faster than 4 or 16 MiB blocks)."""
MAX_LINE_BYTES = 1 << 16
"""A line longer than this is malformed (a valid row is at most ~600 bytes)."""
MAX_COUNT_DIGITS = 18
"""Counts with more digits than this are malformed (they would not fit int64)."""
INT32_MAX = np.iinfo(np.int32).max

_MALLOC_TUNED = False

_DENSE = slice(1, 1 + NUM_DENSE)
_SPARSE = slice(1 + NUM_DENSE, NUM_FIELDS)
_DAY_RE = re.compile(r"^day_(\d+)(\.gz)?$")


def _rep(byte: int) -> np.uint64:
    """The byte repeated in all 8 lanes of a uint64."""
    return np.uint64(byte * 0x0101010101010101)


_HIGH = _rep(0x80)
_LOW4 = _rep(0x0F)
_ONES = _rep(0x01)
_ASCII_ZERO = _rep(0x30)
# Low (8 - L) bytes set to '0' (lane fill for a number of L digits shifted to the top); L = 0..8.
_FILL_ZERO = np.array([(0x3030303030303030 >> (8 * n)) if n < 8 else 0 for n in range(9)], dtype=np.uint64)
_HALF_SHIFT = np.array([4 * (8 - n) for n in range(9)], dtype=np.uint64)
"""Half the left shift that moves an L-digit number to the top of its uint64 (two half shifts: L = 0 -> 64 bits)."""


@dataclass
class RawChunk:
    """Parsed rows of one block of a day file (n rows, bad rows already removed).

    labels:  uint8 [n]        0 / 1
    counts:  int32 [n, 13]    raw counts, missing or negative -> 0, clipped to int32 max
    sparse:  int32 [n, 26]    int(hex, 16) % max_ind_range, empty -> 0
    numeric: float32 [n, 13]  log1p(counts), computed on first access
    """

    labels: np.ndarray
    counts: np.ndarray
    sparse: np.ndarray
    first_line: int
    """1-based line number of the block's first line in the file."""
    nbytes: int
    """Uncompressed bytes of text the block covered."""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @cached_property
    def numeric(self) -> np.ndarray:
        return log1p_dense(self.counts)


def log1p_dense(counts: np.ndarray) -> np.ndarray:
    """float32 log(1 + x) of non-negative counts int [n, 13] (computed in float64, rounded once)."""
    return np.log1p(counts, dtype=np.float64).astype(np.float32)


@dataclass
class ReadStats:
    """What a DayReader saw: rows returned, bad rows skipped, the first few bad-row messages."""

    rows: int = 0
    lines: int = 0
    bad_rows: int = 0
    bytes: int = 0
    bad_examples: list[str] = field(default_factory=list)


def open_day(path: Path) -> BinaryIO:
    """Open a day file for binary reading, decompressing `.gz` files."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb", buffering=0)


def day_problem(path: Path) -> str | None:
    """Why `path` (named day_k or day_k.gz) cannot be a day file, or None: a directory, an empty file (a .gz that
    holds nothing too: an empty day cannot be real Criteo data) or a .gz file that is not gzip."""
    path = Path(path)
    stem = path.name.removesuffix(".gz")
    if path.is_dir():
        return f"is a directory, expected a day file {stem} or {stem}.gz"
    try:
        with open_day(path) as f:
            empty = not f.read(1)
    except (OSError, EOFError, zlib.error) as exc:
        return f"cannot be read ({exc})"
    return "empty file (0 rows; an empty day cannot be real Criteo data)" if empty else None


def day_files(raw_dir: Path, num_days: int | None = None) -> list[Path]:
    """The day files under `raw_dir`, in day order: day_0, day_1, ... (plain preferred over .gz).

    With `num_days`, exactly day_0 .. day_{num_days-1} must exist; otherwise the consecutive run from day_0 is
    taken and a gap (day_3 missing while day_4 exists) is an error. A directory named like a day file and an
    empty (or unreadable) day file among those returned are errors (`day_problem`).
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise UserError(f"{raw_dir}: folder of raw day files not found")
    found: dict[int, Path] = {}
    for entry in sorted(raw_dir.iterdir()):
        m = _DAY_RE.match(entry.name)
        if m and entry.is_dir():
            raise DataError(f"{entry}: {day_problem(entry)}")
        if m and entry.is_file():
            k = int(m.group(1))
            if k not in found or not m.group(2):  # plain wins over .gz
                found[k] = entry
    count = num_days if num_days is not None else len(found)
    missing = [f"day_{k}" for k in range(count) if k not in found]
    if missing or count == 0:
        what = ", ".join(missing) if missing else "day_0"
        raise UserError(f"{raw_dir}: missing {what} (plain or .gz)")
    for path in (found[k] for k in range(count)):
        if (problem := day_problem(path)) is not None:
            raise DataError(f"{path}: {problem}")
    return [found[k] for k in range(count)]


def tune_malloc(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc serve allocations below `mmap_threshold` from the heap and keep up to `trim_threshold` bytes of
    freed heap, once per process.

    The parser allocates many ~1 MB temporaries per block; by default glibc maps each one freshly from the
    kernel and every page then faults in, which costs more than the arithmetic (measured 2-4x slower parsing).
    The cost: the process keeps up to `trim_threshold` of freed memory. Returns False where there is no glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, mmap_threshold) == 1 and libc.mallopt(-1, trim_threshold) == 1  # M_MMAP/M_TRIM
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = ok
    return ok


class DayReader:
    """Iterate over a day file as RawChunk blocks; `stats` is filled as blocks are read.

    Example: `for chunk in DayReader(path): chunk.labels, chunk.counts, chunk.numeric, chunk.sparse`.
    `max_rows` stops after that many good rows (the last block is cut).
    """

    def __init__(self, path: Path, max_ind_range: int = DEFAULT_MAX_IND_RANGE, *,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, skip_bad_rows: bool = False,
                 max_rows: int | None = None) -> None:
        if not 1 <= max_ind_range <= 2 ** 31:
            raise UserError(f"max_ind_range must be between 1 and 2**31, got {max_ind_range}")
        self.path = Path(path)
        self.max_ind_range = int(max_ind_range)
        self.chunk_bytes = max(1024, int(chunk_bytes))
        self.skip_bad_rows = skip_bad_rows
        self.max_rows = max_rows
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[RawChunk]:
        tune_malloc()
        with open_day(self.path) as f:
            try:
                for block, nbytes in _blocks(f, self.chunk_bytes):
                    chunk = self._parse(block, nbytes)
                    if self.max_rows is not None and self.stats.rows + len(chunk) >= self.max_rows:
                        keep = self.max_rows - self.stats.rows
                        self.stats.rows += keep
                        yield _head(chunk, keep)
                        return
                    self.stats.rows += len(chunk)
                    yield chunk
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{self.path}: cannot read after line {self.stats.lines} ({exc}); "
                                f"the file may be truncated or corrupt") from None

    def _parse(self, block: np.ndarray, nbytes: int) -> RawChunk:
        first_line = self.stats.lines + 1
        parsed = parse_block(block, nbytes, self.max_ind_range)
        self.stats.lines += parsed.num_lines
        self.stats.bytes += nbytes
        if parsed.bad_rows.size:
            messages = [_describe(self.path, first_line, parsed, i) for i in range(min(5, parsed.bad_rows.size))]
            if not self.skip_bad_rows:
                raise DataError(messages[0] + " (use --skip-bad-rows to skip malformed rows)")
            self.stats.bad_rows += int(parsed.bad_rows.size)
            self.stats.bad_examples.extend(messages[:max(0, 5 - len(self.stats.bad_examples))])
        return RawChunk(parsed.labels, parsed.counts, parsed.sparse, first_line, nbytes)


def _head(chunk: RawChunk, n: int) -> RawChunk:
    return RawChunk(chunk.labels[:n], chunk.counts[:n], chunk.sparse[:n], chunk.first_line, chunk.nbytes)


# ----------------------------------------------------------------------------------------------------------------
# Blocks of whole lines


def _blocks(f: BinaryIO, chunk_bytes: int) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (buffer, n): `buffer` uint8 [>= n + 16] 8-byte aligned whose first n bytes are whole lines, each
    ending in b'\\n' (one is added at the end of a file that lacks it).

    The buffer is reused between blocks: callers must not keep views of it.
    """
    words = np.zeros((chunk_bytes + MAX_LINE_BYTES) // 8 + 4, dtype=np.uint64)
    arr = words.view(np.uint8)
    view = memoryview(arr)
    carry = 0
    eof = False
    while not eof:
        filled = carry
        while filled < carry + chunk_bytes and not eof:
            got = f.readinto(view[filled:carry + chunk_bytes])
            eof = not got
            filled += got or 0
        if filled == 0:
            return
        if eof:
            if arr[filled - 1] != 0x0A:
                arr[filled] = 0x0A
                filled += 1
            end = filled
        else:
            lo = max(0, filled - MAX_LINE_BYTES - 1)
            end = lo + bytes(view[lo:filled]).rfind(b"\n") + 1
            if end == lo:
                carry = _check_line_length(f, filled)
                continue
        yield arr, end
        carry = _check_line_length(f, filled - end)
        arr[:carry] = arr[end:filled].copy()


def _check_line_length(f: BinaryIO, pending: int) -> int:
    """`pending` bytes of an unfinished line are carried to the next block; too many is a DataError."""
    if pending > MAX_LINE_BYTES:
        raise DataError(f"{getattr(f, 'name', 'input')}: a line is longer than {MAX_LINE_BYTES} bytes "
                        f"(not a Criteo day file?)")
    return pending


# ----------------------------------------------------------------------------------------------------------------
# Vectorised parsing of one block


@dataclass
class ParsedBlock:
    """Result of parse_block: the good rows' values, and where the bad rows are (for error messages).

    labels uint8 [n], counts int32 [n, 13], sparse int32 [n, 26]: good rows only, in file order.
    bad_rows int64 [b]: indices (among the block's lines) of bad rows, ascending; bad_field int64 [b]: the first
    bad field of each (0..39), or 40 when the line has too many fields or a control / non-ASCII character.
    """

    labels: np.ndarray
    counts: np.ndarray
    sparse: np.ndarray
    num_lines: int
    bad_rows: np.ndarray
    bad_field: np.ndarray
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    text: bytes = b""


def parse_block(buf: np.ndarray, n: int, max_ind_range: int) -> ParsedBlock:
    """Parse `buf[:n]`: whole lines, each ending in b'\\n'; `buf` is 8-byte aligned with >= 16 bytes after n."""
    data = buf[:n]
    words = buf[:(n // 8 + 2) * 8].view("<u8")
    starts, ends, bad_lines = _field_offsets(data)
    lengths = ends - starts
    label_ok, labels = _parse_labels(data, starts[:, 0], lengths[:, 0])
    dense_ok, counts = _parse_counts(data, words, starts[:, _DENSE], lengths[:, _DENSE])
    sparse_ok, sparse = _parse_hex(words, starts[:, _SPARSE], lengths[:, _SPARSE], max_ind_range)

    field_ok = np.concatenate([label_ok[:, None], dense_ok, sparse_ok], axis=1)
    row_ok = field_ok.all(axis=1)
    row_ok[bad_lines] = False
    if row_ok.all():
        return ParsedBlock(labels, counts, sparse, len(starts), np.zeros(0, np.int64), np.zeros(0, np.int64))
    bad_rows = np.flatnonzero(~row_ok)
    bad_field = np.argmin(field_ok[bad_rows], axis=1)
    bad_field[np.isin(bad_rows, bad_lines)] = NUM_FIELDS
    return ParsedBlock(labels[row_ok], counts[row_ok], sparse[row_ok], len(starts), bad_rows, bad_field,
                       starts, ends, data.tobytes())


def _field_offsets(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Field start / end byte offsets int64 [lines, 40] (missing trailing fields are empty, at the line end) and
    the indices int64 [b] of lines with more than 40 fields, a control character or a non-ASCII byte."""
    pos = np.flatnonzero(data.view(np.int8) < 0x20)  # control characters and bytes >= 0x80
    kind = data[pos]
    if pos.size % NUM_FIELDS == 0:
        k = kind.reshape(-1, NUM_FIELDS)
        if (k == _FAST_KINDS).all():
            return _fast_offsets(pos.reshape(-1, NUM_FIELDS))
    return _general_offsets(pos, kind)


_FAST_KINDS = np.array([9] * (NUM_FIELDS - 1) + [10], dtype=np.uint8)
"""The separators of a line with all 40 fields and a bare LF ending."""


def _fast_offsets(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The common case: every line has exactly 40 fields and ends in LF; `ends` = separator offsets [lines, 40]."""
    starts = np.empty_like(ends)
    starts[:, 1:] = ends[:, :-1]
    starts[0, 0] = -1
    starts[1:, 0] = ends[:-1, -1]
    starts += 1
    return starts, ends, np.zeros(0, dtype=np.int64)


def _general_offsets(pos: np.ndarray, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Any mix of 1..40 fields per line and CRLF endings; malformed lines are flagged, not raised."""
    line_start = np.r_[0, pos[kind == 10][:-1] + 1]
    if (kind == 13).any():
        pos, kind = _fold_crlf(pos, kind)
    is_end = kind == 10
    is_tab = kind == 9
    num_lines = line_start.size
    line_of = np.cumsum(is_end)
    line_of -= is_end
    first_sep = np.flatnonzero(np.r_[True, is_end[:-1]])
    field_of = np.arange(pos.size) - first_sep[line_of]
    ok_sep = (field_of < NUM_FIELDS) & (is_tab | is_end)
    all_ok = bool(ok_sep.all())
    bad_lines = np.zeros(0, np.int64) if all_ok else np.unique(line_of[~ok_sep])

    ends = np.repeat(pos[is_end], NUM_FIELDS).reshape(num_lines, NUM_FIELDS)
    flat = line_of * NUM_FIELDS
    flat += field_of
    ends.reshape(-1)[flat if all_ok else flat[ok_sep]] = pos if all_ok else pos[ok_sep]
    # A field starts after the previous field's end; missing trailing fields (start past the line end) are empty.
    starts = np.empty_like(ends)
    starts[:, 0] = line_start
    np.add(ends[:, :-1], 1, out=starts[:, 1:])
    np.minimum(starts, ends, out=starts)
    return starts, ends, bad_lines


def _fold_crlf(pos: np.ndarray, kind: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Separators with each CR that directly precedes an LF turned into the line end, and that LF dropped."""
    crlf = np.zeros(kind.size, dtype=bool)
    crlf[:-1] = (kind[:-1] == 13) & (kind[1:] == 10) & (pos[1:] == pos[:-1] + 1)
    keep = np.ones(kind.size, dtype=bool)
    keep[1:] = ~crlf[:-1]
    return pos[keep], np.where(crlf, np.uint8(10), kind)[keep]


def _parse_labels(data: np.ndarray, start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels '0' / '1' -> (ok bool [n], uint8 [n])."""
    first = data.take(start)
    ok = (length == 1) & ((first | 1) == 0x31)
    return ok, first & 1


def _load8(words: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The 8 bytes at each byte offset, as little-endian uint64 (two aligned loads and shifts; faster than
    numpy's unaligned gather). start int64 [m] -> uint64 [m]."""
    q = start >> 3
    r = ((start & 7) << 3).view(np.uint64)
    lo = words.take(q)
    q += 1
    hi = words.take(q)
    lo >>= r
    hi <<= _U1
    np.subtract(_U63, r, out=r)
    hi <<= r
    lo |= hi
    return lo


def _parse_counts(data: np.ndarray, words: np.ndarray, start: np.ndarray, length: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Signed decimal counts -> (ok bool [n, 13], int32 [n, 13] with missing or negative -> 0).

    Up to 8 digits in SWAR: the digits are shifted to the top bytes of a uint64, checked all at once, and
    combined pairwise (Lemire's eight-digit trick). Longer numbers (rare) are parsed one by one.
    """
    shape = start.shape
    start = start.ravel()
    length = length.ravel()
    neg = (length > 0) & (data.take(start) == 0x2D)
    dstart = start + neg
    digits = length - neg
    short = np.minimum(digits, 8)
    half = _HALF_SHIFT.take(short)
    x = _load8(words, dstart)
    x <<= half
    x <<= half
    filled = x | _FILL_ZERO.take(short)
    check = filled + _rep(0x46)
    filled -= _ASCII_ZERO
    check |= filled
    check &= _HIGH
    ok = (check == 0) & ((digits > 0) | (length == 0))
    x &= _LOW4
    value = _eight_digits(x)
    value *= ~neg
    long = np.flatnonzero(digits > 8)
    if long.size:
        _parse_long_counts(data, dstart, digits, neg, long, ok, value)
    return ok.reshape(shape), value.astype(np.int32).reshape(shape)


def _eight_digits(v: np.ndarray) -> np.ndarray:
    """uint64 [m] holding 8 digit values 0..9 (one per byte, most significant first in memory) -> their decimal
    value, uint64 [m] (in place)."""
    t = v >> _U8
    v *= _U10
    v += t
    v &= np.uint64(0x00FF00FF00FF00FF)
    np.right_shift(v, _U16, out=t)
    v *= np.uint64(100)
    v += t
    v &= np.uint64(0x0000FFFF0000FFFF)
    np.right_shift(v, _U32, out=t)
    v *= np.uint64(10000)
    v += t
    v &= np.uint64(0xFFFFFFFF)
    return v


def _parse_long_counts(data: np.ndarray, dstart: np.ndarray, digits: np.ndarray, neg: np.ndarray,
                       long: np.ndarray, ok: np.ndarray, value: np.ndarray) -> None:
    """Counts of more than 8 digits (rare), parsed one by one in place; clipped to int32 max."""
    for i in long:
        s, d = int(dstart[i]), int(digits[i])
        text = data[s:s + d].tobytes()
        if d > MAX_COUNT_DIGITS or not text.isdigit():
            ok[i] = False
            value[i] = 0
        else:
            value[i] = 0 if neg[i] else min(int(text), INT32_MAX)


def _parse_hex(words: np.ndarray, start: np.ndarray, length: np.ndarray, max_ind_range: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Categories of 8 hex digits -> (ok bool [n, 26], int32 [n, 26] = value % max_ind_range, empty -> 0).

    Fields hold no control or non-ASCII bytes (those lines are flagged earlier), so after lower-casing
    (| 0x20) every byte is in 0x20..0x7F, and per byte the high bits of v + 0x50, v + 0x46, v + 0x1F and
    v + 0x19 (no carries between bytes) are 0000, 1000, 1100, 1110, 1111 below '0', in '0'..'9', between,
    in 'a'..'f', above: their XOR is 1 exactly for hex digits.
    """
    shape = start.shape
    start = start.ravel()
    length = length.ravel()
    low = _load8(words, start)
    low |= _rep(0x20)
    acc = low + _rep(0x50)
    tmp = low + _rep(0x46)
    acc ^= tmp
    np.add(low, _rep(0x1F), out=tmp)
    acc ^= tmp
    np.add(low, _rep(0x19), out=tmp)
    acc ^= tmp
    acc &= _HIGH
    empty = length == 0
    ok = ((acc == _HIGH) & (length == 8)) | empty
    # nibble = (c & 0xF) + 9 * bit 6 of c; then pairs, quads, 8 nibbles -> uint32.
    np.right_shift(low, _U6, out=tmp)
    tmp &= _ONES
    tmp *= _U9
    low &= _LOW4
    low += tmp
    _combine(low, tmp, _U4, _U8, np.uint64(0x00FF00FF00FF00FF))
    _combine(low, tmp, _U8, _U16, np.uint64(0x0000FFFF0000FFFF))
    _combine(low, tmp, _U16, _U32, np.uint64(0xFFFFFFFF))
    if max_ind_range < 2 ** 32:
        low %= np.uint64(max_ind_range)
    low *= ~empty
    return ok.reshape(shape), low.astype(np.int32).reshape(shape)


def _combine(v: np.ndarray, tmp: np.ndarray, up: np.uint64, down: np.uint64, mask: np.uint64) -> None:
    """v = ((v << up) | (v >> down)) & mask, in place: joins adjacent lanes (the first in memory on top)."""
    np.right_shift(v, down, out=tmp)
    v <<= up
    v |= tmp
    v &= mask


_U1, _U4, _U6, _U8, _U9, _U10, _U16, _U32, _U63 = (np.uint64(k) for k in (1, 4, 6, 8, 9, 10, 16, 32, 63))


def _describe(path: Path, first_line: int, parsed: ParsedBlock, index: int) -> str:
    """The error message for the `index`-th bad row of a block: file, 1-based line, field, and what was found."""
    row, fld = int(parsed.bad_rows[index]), int(parsed.bad_field[index])
    assert parsed.starts is not None and parsed.ends is not None
    line = first_line + row
    text = parsed.text
    if fld == NUM_FIELDS:
        s0 = int(parsed.starts[row, 0])
        row_text = text[s0:text.index(b"\n", s0)]
        odd = [c for c in row_text.rstrip(b"\r") if (c < 0x20 and c != 9) or c >= 0x80]
        if odd:
            return f"{path}:{line}: byte 0x{odd[0]:02x} is not allowed in a Criteo row (not a Criteo day file?)"
        nfields = row_text.rstrip(b"\r").count(b"\t") + 1
        return f"{path}:{line}: field {FIELD_NAMES[-1]}: more than {NUM_FIELDS} fields (found {nfields})"
    s, e = int(parsed.starts[row, fld]), int(parsed.ends[row, fld])
    found = text[s:e][:40].decode("latin-1")
    want = "0 or 1" if fld == 0 else "an integer count" if fld <= NUM_DENSE else "8 hex digits"
    return f"{path}:{line}: field {FIELD_NAMES[fld]}: expected {want}, found {found!r}"
