"""Raw day reader: real Criteo rows, padding of truncated rows, CRLF, gzip, block boundaries, malformed rows."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlrm_bench.criteo.reader import INT32_MAX, DayReader, day_files
from tests.reader_helpers import read_day
from dlrm_bench.errors import DataError, UserError

SAMPLE = Path(__file__).resolve().parent / "data" / "train_1000.txt"
R = 40_000_000


def reference_parse(text: str, max_ind_range: int = R) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Line-by-line parse with Python's int(): labels [n], counts [n, 13], hashed [n, 26]."""
    labels, counts, sparse = [], [], []
    for line in text.splitlines():
        f = line.split("\t")
        f += [""] * (40 - len(f))
        labels.append(int(f[0]))
        counts.append([min(max(int(x), 0), INT32_MAX) if x else 0 for x in f[1:14]])
        sparse.append([int(x, 16) % max_ind_range if x else 0 for x in f[14:40]])
    return np.array(labels), np.array(counts).reshape(-1, 13), np.array(sparse).reshape(-1, 26)


def assert_parsed(path: Path, text: str, max_ind_range: int = R, **kw) -> None:
    chunk, stats = read_day(path, max_ind_range, **kw)
    labels, counts, sparse = reference_parse(text, max_ind_range)
    assert stats.rows == len(labels) and stats.bad_rows == 0
    np.testing.assert_array_equal(chunk.labels, labels)
    np.testing.assert_array_equal(chunk.counts, counts)
    np.testing.assert_array_equal(chunk.sparse, sparse)
    np.testing.assert_allclose(chunk.numeric, np.log1p(counts.astype(np.float64)), rtol=1e-6)
    assert chunk.labels.dtype == np.uint8 and chunk.counts.dtype == np.int32 and chunk.sparse.dtype == np.int32
    assert chunk.numeric.dtype == np.float32


def test_real_rows_match_reference_parse():
    text = SAMPLE.read_text()
    field_counts = {line.count("\t") + 1 for line in text.splitlines()}
    assert {37, 38, 40} <= field_counts  # the sample really has truncated rows
    assert_parsed(SAMPLE, text)


@pytest.mark.parametrize("chunk_bytes", [1024, 3000, 65_536])
def test_block_boundaries_do_not_change_the_result(chunk_bytes):
    assert_parsed(SAMPLE, SAMPLE.read_text(), chunk_bytes=chunk_bytes)


def test_padded_and_truncated_rows_parse_the_same(tmp_path):
    lines = SAMPLE.read_text().splitlines()
    padded = ["\t".join(line.split("\t") + [""] * (40 - len(line.split("\t")))) for line in lines]
    (tmp_path / "padded").write_text("\n".join(padded) + "\n")
    a, _ = read_day(SAMPLE)
    b, _ = read_day(tmp_path / "padded")
    for name in ("labels", "counts", "sparse", "numeric"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_crlf_gzip_and_missing_final_newline(tmp_path):
    text = SAMPLE.read_text()
    crlf = tmp_path / "crlf"
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    assert_parsed(crlf, text, chunk_bytes=4096)
    gz = tmp_path / "day_0.gz"
    with gzip.open(gz, "wb") as f:
        f.write(text.encode())
    assert_parsed(gz, text, chunk_bytes=5000)
    bare = tmp_path / "bare"
    bare.write_text(text.rstrip("\n"))
    assert_parsed(bare, text)


def test_small_max_ind_range_and_uppercase_hex(tmp_path):
    row = "1\t" + "\t".join(["7"] * 13) + "\t" + "\t".join(["FFFFFFFF", "0000000a", "DeadBeef"] + [""] * 23)
    path = tmp_path / "day"
    path.write_text(row + "\n")
    chunk, _ = read_day(path, 1000)
    assert chunk.sparse[0, :4].tolist() == [0xFFFFFFFF % 1000, 10, 0xDEADBEEF % 1000, 0]
    assert chunk.labels.tolist() == [1]


def test_counts_negative_long_and_empty(tmp_path):
    counts = ["-5", "", "123456789", "99999999999", "-123456789012", "0", "00042", "8", "", "", "", "", "1"]
    row = "0\t" + "\t".join(counts) + "\t" + "\t".join(["00000001"] * 26)
    path = tmp_path / "day"
    path.write_text(row + "\n")
    chunk, _ = read_day(path)
    assert chunk.counts[0].tolist() == [0, 0, 123456789, INT32_MAX, 0, 0, 42, 8, 0, 0, 0, 0, 1]


def _row(label="0", counts=None, cats=None) -> str:
    counts = counts if counts is not None else ["1"] * 13
    cats = cats if cats is not None else ["0a1b2c3d"] * 26
    return "\t".join([label] + counts + cats)


def _with(counts=None, cats=None, **kw) -> str:
    c = ["1"] * 13
    k = ["0a1b2c3d"] * 26
    for i, v in (counts or {}).items():
        c[i - 1] = v
    for i, v in (cats or {}).items():
        k[i - 1] = v
    return _row(counts=c, cats=k, **kw)


BAD_ROWS = [
    (_row(label="2"), "field label: expected 0 or 1, found '2'"),
    (_row(label=""), "field label"),
    (_with(counts={5: "1.5"}), "field I5: expected an integer count, found '1.5'"),
    (_with(counts={1: "12a"}), "field I1"),
    (_with(counts={13: "-"}), "field I13"),
    (_with(counts={2: "+3"}), "field I2"),
    (_with(counts={3: "1" * 19}), "field I3"),
    (_with(cats={12: "zzzzzzzz"}), "field C12: expected 8 hex digits, found 'zzzzzzzz'"),
    (_with(cats={1: "0a1b2c3"}), "field C1"),
    (_with(cats={26: "0a1b2c3d0"}), "field C26"),
    (_with(cats={7: "0a1b 2c3"}), "field C7"),
    (_row() + "\textra", "more than 40 fields (found 41)"),
    (_with(cats={3: "0a1b\x0bc3"}), "byte 0x0b"),
    (_with(cats={3: "0a1b\xe9c3d"}), "byte 0xc3"),
]


@pytest.mark.parametrize("bad,message", BAD_ROWS)
def test_malformed_row_names_file_line_and_field(tmp_path, bad, message):
    path = tmp_path / "day_0"
    good = _row()
    path.write_text("\n".join([good, good, bad, good]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_day(path)
    text = str(err.value)
    assert f"{path}:3:" in text
    assert message in text


def test_malformed_row_line_number_in_a_later_block(tmp_path):
    lines = SAMPLE.read_text().splitlines()
    lines[876] = "x" + lines[876]  # label "x0"
    path = tmp_path / "day_5"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"day_5:877: field label"):
        read_day(path, chunk_bytes=2048)


def test_skip_bad_rows_counts_and_drops_them(tmp_path):
    good = SAMPLE.read_text().splitlines()[:50]
    bad = [b for b, _ in BAD_ROWS[:6]]
    mixed = list(good)
    for i, b in enumerate(bad):
        mixed.insert(3 + 7 * i, b)
    path = tmp_path / "mixed"
    path.write_text("\n".join(mixed) + "\n")
    reader = DayReader(path, chunk_bytes=1024, skip_bad_rows=True)
    chunks = list(reader)
    assert reader.stats.bad_rows == len(bad)
    assert reader.stats.rows == len(good)
    assert reader.stats.lines == len(mixed)
    assert "mixed:4: field label" in reader.stats.bad_examples[0]
    labels, counts, sparse = reference_parse("\n".join(good))
    np.testing.assert_array_equal(np.concatenate([c.sparse for c in chunks]), sparse)
    np.testing.assert_array_equal(np.concatenate([c.counts for c in chunks]), counts)


def test_max_rows_stops_early(tmp_path):
    reader = DayReader(SAMPLE, chunk_bytes=4096, max_rows=123)
    assert sum(len(c) for c in reader) == 123 and reader.stats.rows == 123


def test_empty_file_and_truncated_gzip(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    chunk, stats = read_day(tmp_path / "empty")
    assert len(chunk) == 0 and stats.rows == 0
    data = gzip.compress(SAMPLE.read_bytes())
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_day(tmp_path / "cut.gz")
    corrupt = bytearray(data)
    corrupt[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    (tmp_path / "bad.gz").write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match="bad.gz: cannot read"):
        read_day(tmp_path / "bad.gz")


def test_day_files_order_gaps_and_plain_over_gz(tmp_path):
    for name in ("day_0", "day_0.gz", "day_2", "day_10", "notes.txt"):
        (tmp_path / name).write_text("0\n")
    (tmp_path / "day_1.gz").write_bytes(gzip.compress(b"0\n"))
    with pytest.raises(UserError, match="day_3"):
        day_files(tmp_path)
    assert [p.name for p in day_files(tmp_path, 3)] == ["day_0", "day_1.gz", "day_2"]
    with pytest.raises(UserError, match="not found"):
        day_files(tmp_path / "nowhere")


@pytest.mark.parametrize("name, content", [("day_1", b""), ("day_1.gz", gzip.compress(b"")),
                                           ("day_1.gz", b"plain text, not gzip")])
def test_day_files_refuses_an_empty_or_unreadable_day(tmp_path, name, content):
    (tmp_path / "day_0").write_text("0\n")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=rf"{tmp_path / name}: (empty file|cannot be read)"):
        day_files(tmp_path)
    (tmp_path / name).write_bytes(gzip.compress(b"0\n") if name.endswith(".gz") else b"0\n")
    assert [p.name for p in day_files(tmp_path)] == ["day_0", name]


def test_day_files_refuses_a_directory_named_like_a_day(tmp_path):
    (tmp_path / "day_0").write_text("0\n")
    (tmp_path / "day_1").mkdir()  # the last day: without the check it would silently be left out
    with pytest.raises(DataError, match=rf"{tmp_path / 'day_1'}: is a directory, expected a day file day_1 or "
                                        r"day_1.gz"):
        day_files(tmp_path)


_hex = st.text("0123456789abcdefABCDEF", min_size=8, max_size=8)
_count = st.one_of(st.just(""), st.integers(-10 ** 12, 10 ** 12).map(str))
_line = st.tuples(st.sampled_from("01"), st.lists(_count, min_size=13, max_size=13),
                  st.lists(st.one_of(st.just(""), _hex), min_size=26, max_size=26), st.integers(0, 26))


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(_line, min_size=1, max_size=30), crlf=st.booleans(), chunk=st.integers(1024, 4096),
       max_ind_range=st.sampled_from([1, 7, 1000, R, 2 ** 31]))
def test_random_rows_match_reference_parse(tmp_path_factory, rows, crlf, chunk, max_ind_range):
    lines = []
    for label, counts, cats, drop in rows:
        fields = [label] + counts + cats
        while drop and fields[-1] == "":  # drop trailing empty fields, as real files do
            fields.pop()
            drop -= 1
        lines.append("\t".join(fields))
    text = "\n".join(lines) + "\n"
    path = tmp_path_factory.mktemp("rand") / "day"
    path.write_bytes(text.replace("\n", "\r\n").encode() if crlf else text.encode())
    assert_parsed(path, text, max_ind_range, chunk_bytes=chunk)
