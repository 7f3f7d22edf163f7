"""Preprocessing of small hand-written days: ids, splits, numeric encodings, data.bin, frequencies, resume."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from dlrm_bench.criteo.dataset import load_meta, open_partition, open_split
from dlrm_bench.criteo.frequencies import read_row_frequencies
from dlrm_bench.criteo.packing import packing_layout, unpack
from dlrm_bench.criteo.preprocess import PreprocessOptions, main, preprocess, split_sizes
from dlrm_bench.errors import DataError

R = 1000  # max_ind_range: small, so hashing collisions are easy to write by hand


def make_row(label: int, counts: list[int | None], cats: list[int | None]) -> str:
    """One raw line; counts / categories None -> empty field; categories are written as 8 hex digits."""
    c = ["" if v is None else str(v) for v in counts] + [""] * (13 - len(counts))
    k = ["" if v is None else f"{v:08x}" for v in cats] + [""] * (26 - len(cats))
    return "\t".join([str(label)] + c + k)


def write_days(raw: Path, days: list[list[tuple[int, list, list]]]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for k, rows in enumerate(days):
        (raw / f"day_{k}").write_text("".join(make_row(*r) + "\n" for r in rows))


# C1 values by day (hashed = v % 1000): 5, 1005 and 5 collide; C2 is empty (-> 0) except where given.
DAYS = [
    [(0, [1, -3, None], [5, 7]), (1, [0, 2], [12, None]), (0, [10 ** 6], [1005, 7])],
    [(1, [3], [40]), (0, [None, 4], [12, 9]), (0, [5], [2999, 9])],
    [(1, [7], [40, 3]), (0, [10 ** 9], [77]), (1, [], [5]), (0, [2], [888, 7]), (1, [1], [12])],
]


def expected_ids(days, feature: int) -> tuple[list[int], list[list[int]]]:
    """The dictionary (hashed values in first-appearance order) and per day the ids of the feature."""
    dictionary: dict[int, int] = {}
    per_day = []
    for rows in days:
        ids = []
        for _, _, cats in rows:
            v = cats[feature] if feature < len(cats) and cats[feature] is not None else 0
            h = v % R
            dictionary.setdefault(h, len(dictionary))
            ids.append(dictionary[h])
        per_day.append(ids)
    return list(dictionary), per_day


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    write_days(root / "raw", DAYS)
    options = PreprocessOptions(max_ind_range=R, workers=1, progress=False, compress=True, calibration_rows=128)
    meta = preprocess(root / "raw", root / "out", "hand", options, log=lambda _: None)
    return root, meta


def test_first_appearance_ids_and_dictionaries(dataset):
    root, meta = dataset
    out = root / "out"
    for j in (0, 1, 2, 25):
        dictionary, per_day = expected_ids(DAYS, j)
        assert np.load(out / "dictionaries" / f"feature_{j}.npy").tolist() == dictionary
        assert meta["cardinalities"][j] == len(dictionary)
        for k in (0, 1):
            assert open_split(out / "days" / f"day_{k}").categorical[:, j].tolist() == per_day[k]
        last = per_day[2]
        assert open_split(out / "test").categorical[:, j].tolist() == last[:3]
        assert open_split(out / "calibration").categorical[:, j].tolist() == last[3:]
    assert np.load(out / "dictionaries" / "feature_0.npy").tolist() == [5, 12, 40, 999, 77, 888]


def test_split_sizes_and_meta(dataset):
    root, meta = dataset
    assert split_sizes(5) == (3, 2)
    assert split_sizes(5, calibration_rows=1) == (3, 1)
    assert split_sizes(1) == (1, 0)
    assert split_sizes(10 ** 6) == (500_000, 128_000)
    m = load_meta(root / "out")
    assert (m.test_rows, m.calibration_rows, m.raw["train_rows"], m.raw["num_days"]) == (3, 2, 6, 3)
    assert m.max_ind_range == R and len(m.fingerprint) == 32 and m.name == "hand"
    np.testing.assert_array_equal(open_split(root / "out" / "test").labels, [1.0, 0.0, 1.0])
    assert sorted(p.name for p in (root / "out").iterdir()) == [
        "calibration", "days", "dictionaries", "meta.json", "row_frequencies.bin", "test"]


def test_numeric_arrays(dataset):
    root, _ = dataset
    test = open_split(root / "out" / "test")
    raw = np.array([[7] + [0] * 12, [10 ** 9] + [0] * 12, [0] * 13], dtype=np.float64)
    np.testing.assert_allclose(test.numeric, np.log1p(raw), rtol=1e-7)
    assert test.numeric.dtype == np.float32
    fp16 = test.optional("numeric_fp16.npy")
    np.testing.assert_array_equal(fp16, test.numeric.astype(np.float16))
    int8 = test.optional("numeric_int8_linear.npy")
    # log1p(7) = 2.0794 -> 2.0794 * 127 / 14.2313 = 18.56 -> 18; log1p(1e9) = 20.7 -> 184.9 -> clipped to 127
    assert int8.dtype == np.int8 and int8[:, 0].tolist() == [18, 127, 0]
    chw4 = test.optional("numeric_int8_chw4.npy")
    assert chw4.shape == (3, 16) and chw4.dtype == np.int8
    np.testing.assert_array_equal(chw4[:, :13], int8)
    assert not chw4[:, 13:].any()
    days0 = open_split(root / "out" / "days" / "day_0").numeric
    assert days0[0, :3].tolist() == pytest.approx([math.log(2), 0.0, 0.0])  # -3 -> 0, missing -> 0
    assert days0[2, 0] == pytest.approx(math.log1p(10 ** 6))


def test_data_bin_records(dataset):
    root, _ = dataset
    for split, rows in (("test", DAYS[2][:3]), ("calibration", DAYS[2][3:])):
        records = np.fromfile(root / "out" / split / "data.bin", dtype="<i4").reshape(-1, 40)
        assert (root / "out" / split / "data.bin").stat().st_size == 160 * len(rows)
        s = open_split(root / "out" / split)
        for i, (label, counts, _) in enumerate(rows):
            want = [max(c, 0) if c is not None else 0 for c in counts] + [0] * (13 - len(counts))
            assert records[i, 0] == label
            assert records[i, 1:14].tolist() == [min(w, 2 ** 31 - 1) for w in want]
        np.testing.assert_array_equal(records[:, 14:], s.categorical)


def test_row_frequencies_count_training_lookups(dataset):
    root, meta = dataset
    freqs = read_row_frequencies(root / "out" / "row_frequencies.bin")
    assert [f.size for f in freqs] == meta["cardinalities"]
    for j in (0, 1, 5):
        _, per_day = expected_ids(DAYS, j)
        want = np.bincount(per_day[0] + per_day[1], minlength=meta["cardinalities"][j])
        np.testing.assert_array_equal(freqs[j], want.astype(np.float32))
    assert freqs[0].tolist() == [2, 2, 1, 1, 0, 0]  # ids 4, 5 appear only in the last day
    assert sum(f.sum() for f in freqs) == 26 * 6


def test_partition_and_compressed(dataset):
    root, meta = dataset
    part = open_partition(root / "out" / "test", 3)
    assert part[0] == 0 and part[-1] == 3
    packed = np.load(root / "out" / "test" / "categorical_int32_compressed.npy")
    ids = open_split(root / "out" / "test").categorical
    np.testing.assert_array_equal(unpack(packed, packing_layout(meta["cardinalities"])), ids)
    assert meta["compressed"] and "test/categorical_int32_compressed.npy" in meta["files"]


def test_parallel_run_gives_the_same_fingerprint(dataset, tmp_path):
    root, meta = dataset
    again = preprocess(root / "raw", tmp_path / "par", "hand",
                       PreprocessOptions(max_ind_range=R, workers=2, progress=False, compress=True,
                                         calibration_rows=128), log=lambda _: None)
    assert again["fingerprint"] == meta["fingerprint"]
    assert again["files"] == meta["files"]


def test_rerun_is_a_no_op_and_changes_change_the_fingerprint(tmp_path):
    write_days(tmp_path / "raw", DAYS)
    opts = PreprocessOptions(max_ind_range=R, workers=1, progress=False)
    logs: list[str] = []
    first = preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=logs.append)
    mtime = (tmp_path / "out" / "test" / "categorical_int32.npy").stat().st_mtime_ns
    logs.clear()
    second = preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=logs.append)
    assert any("up to date" in m for m in logs) and second["fingerprint"] == first["fingerprint"]
    assert (tmp_path / "out" / "test" / "categorical_int32.npy").stat().st_mtime_ns == mtime
    assert not (tmp_path / "out" / ".work").exists()
    changed = [list(d) for d in DAYS]
    changed[1] = changed[1] + [(1, [1], [123])]
    write_days(tmp_path / "raw", changed)
    third = preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=lambda _: None)
    assert third["fingerprint"] != first["fingerprint"] and third["train_rows"] == 7
    fourth = preprocess(tmp_path / "raw", tmp_path / "out", "x",
                        PreprocessOptions(max_ind_range=R + 1, workers=1, progress=False), log=lambda _: None)
    assert fourth["fingerprint"] != third["fingerprint"]


class _Interrupt(Exception):
    pass


def test_interrupted_run_resumes(tmp_path):
    write_days(tmp_path / "raw", DAYS)
    opts = PreprocessOptions(max_ind_range=R, workers=1, progress=False)
    reference = preprocess(tmp_path / "raw", tmp_path / "ref", "x", opts, log=lambda _: None)

    def stop_at_write(message: str) -> None:
        if message.startswith("write:"):
            raise _Interrupt
    with pytest.raises(_Interrupt):
        preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=stop_at_write)
    assert not (tmp_path / "out" / "meta.json").exists()
    logs: list[str] = []
    resumed = preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=logs.append)
    assert "scan: 0 of 3 days to parse (3 already scanned)" in logs
    assert "merge: dictionaries already built" in logs
    assert resumed["fingerprint"] == reference["fingerprint"]


def test_bad_day_fails_then_only_that_day_is_rescanned(tmp_path):
    bad = [list(d) for d in DAYS]
    write_days(tmp_path / "raw", bad)
    (tmp_path / "raw" / "day_2").write_text((tmp_path / "raw" / "day_2").read_text() + "7\t1\n")
    opts = PreprocessOptions(max_ind_range=R, workers=1, progress=False)
    with pytest.raises(DataError, match=r"day_2:6: field label"):
        preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=lambda _: None)
    (tmp_path / "raw" / "day_2").write_text("".join(make_row(*r) + "\n" for r in DAYS[2]))
    logs: list[str] = []
    meta = preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=logs.append)
    assert "scan: 1 of 3 days to parse (2 already scanned)" in logs
    assert meta["test_rows"] == 3


@pytest.mark.parametrize("bad", ["empty", "directory"])
def test_empty_or_directory_day_fails_before_any_work(tmp_path, bad):
    write_days(tmp_path / "raw", DAYS)
    day1 = tmp_path / "raw" / "day_1"
    if bad == "empty":
        day1.write_text("")
    else:
        day1.unlink()
        day1.mkdir()
    args = argparse.Namespace(raw_dir=tmp_path / "raw", output=tmp_path / "out", name="x", max_ind_range=R,
                              skip_bad_rows=False, workers=1, compress=False, quantile_file=None)
    expected = "empty file" if bad == "empty" else "is a directory, expected a day file day_1 or day_1.gz"
    with pytest.raises(DataError, match=rf"^{day1}: {expected}"):
        main(args)
    assert not (tmp_path / "out").exists()


def test_day_of_only_skipped_rows_is_an_error(tmp_path):
    write_days(tmp_path / "raw", DAYS)
    (tmp_path / "raw" / "day_1").write_text("2\t1\nnot a row\n")
    opts = PreprocessOptions(max_ind_range=R, workers=1, progress=False, skip_bad_rows=True)
    with pytest.raises(DataError, match=r"day_1: no valid rows \(2 malformed rows skipped\)"):
        preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=lambda _: None)


def test_skip_bad_rows_reports_count(tmp_path, capsys):
    write_days(tmp_path / "raw", DAYS)
    day1 = tmp_path / "raw" / "day_1"
    day1.write_text(day1.read_text() + "2\t1\n" + make_row(0, [1], [5]).replace("00000005", "0000000g") + "\n")
    args = argparse.Namespace(raw_dir=tmp_path / "raw", output=tmp_path / "out", name="x", max_ind_range=R,
                              skip_bad_rows=True, workers=1, compress=False, quantile_file=None)
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "skipped 2 malformed rows" in printed and "day_1:4: field label" in printed
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["bad_rows"] == 2 and meta["train_rows"] == 6
    assert meta["days"][1] == {"file": "day_1", "rows": 3, "bad_rows": 2}


def test_gzip_days_and_crlf(tmp_path, dataset):
    import gzip

    root, meta = dataset
    raw = tmp_path / "raw"
    raw.mkdir()
    for k, rows in enumerate(DAYS):
        text = "".join(make_row(*r) + "\r\n" for r in rows).encode()
        if k == 1:
            (raw / f"day_{k}.gz").write_bytes(gzip.compress(text))
        else:
            (raw / f"day_{k}").write_bytes(text)
    again = preprocess(raw, tmp_path / "out", "hand",
                       PreprocessOptions(max_ind_range=R, workers=1, progress=False, compress=True,
                                         calibration_rows=128), log=lambda _: None)
    assert again["fingerprint"] == meta["fingerprint"]


def test_partial_files_never_have_final_names(tmp_path):
    write_days(tmp_path / "raw", DAYS)
    opts = PreprocessOptions(max_ind_range=R, workers=1, progress=False)

    def stop(message: str) -> None:
        if message.startswith("write:"):
            raise _Interrupt
    with pytest.raises(_Interrupt):
        preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=stop)
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and ".tmp" in p.name]
    assert leftovers == []
    for p in (tmp_path / "out" / "dictionaries").iterdir():
        np.load(p)  # complete
    assert not os.path.exists(tmp_path / "out" / "test" / "ground_truth.npy")


def test_synthetic_days_end_to_end(tmp_path):
    synthetic = pytest.importorskip("dlrm_bench.criteo.synthetic")
    days = synthetic.generate_days(tmp_path / "raw", "tiny", seed=3, num_days=3, rows_per_day=3000, gzip=True)
    assert [p.name for p in days] == ["day_0.gz", "day_1.gz", "day_2.gz"]
    meta = preprocess(tmp_path / "raw", tmp_path / "out", "synthetic-test",
                      PreprocessOptions(max_ind_range=50_000, workers=2, progress=False), log=lambda _: None)
    assert (meta["train_rows"], meta["test_rows"], meta["calibration_rows"]) == (6000, 1500, 1500)
    # Independent check of feature C3's ids: a Python dict over the raw text, in day order.
    import gzip

    dictionary: dict[int, int] = {}
    ids = []
    for p in days:
        for line in gzip.open(p, "rt").read().splitlines():
            fields = line.split("\t") + [""] * 40
            h = int(fields[16], 16) % 50_000 if fields[16] else 0
            ids.append(dictionary.setdefault(h, len(dictionary)))
    assert meta["cardinalities"][2] == len(dictionary)
    np.testing.assert_array_equal(open_split(tmp_path / "out" / "days" / "day_1").categorical[:, 2], ids[3000:6000])
    np.testing.assert_array_equal(open_split(tmp_path / "out" / "test").categorical[:, 2], ids[6000:7500])
    labels = open_split(tmp_path / "out" / "test").labels
    assert 0.0 < labels.mean() < 0.5


def test_single_day_has_no_training_days(tmp_path):
    write_days(tmp_path / "raw", DAYS[2:])
    meta = preprocess(tmp_path / "raw", tmp_path / "out", "one", PreprocessOptions(max_ind_range=R, workers=1,
                      progress=False), log=lambda _: None)
    assert (meta["train_rows"], meta["test_rows"], meta["calibration_rows"]) == (0, 3, 2)
    freqs = read_row_frequencies(tmp_path / "out" / "row_frequencies.bin")
    assert [f.size for f in freqs] == meta["cardinalities"] and not any(f.any() for f in freqs)
    assert not (tmp_path / "out" / "days").exists()


def test_hash_index_finds_every_value_and_rejects_others():
    from dlrm_bench.criteo.preprocess import HashIndex

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 1000, 50_000):
        values = rng.choice(2 ** 31 - 1, size=n, replace=False).astype(np.int32)
        index = HashIndex.build(values)
        assert index.keys.size >= 2 * n and (index.keys != -1).sum() == n
        queries = np.concatenate([values, values[::-1]])
        np.testing.assert_array_equal(index.lookup(queries), np.r_[np.arange(n), np.arange(n)[::-1]])
        absent = rng.integers(0, 2 ** 31 - 1, size=1000).astype(np.int32)
        absent = absent[~np.isin(absent, values)]
        assert (index.lookup(absent) == -1).all()


def test_large_hash_range_uses_the_hash_tables(tmp_path):
    """max_ind_range 40M with C1 values spread over it: C1 gets a hash table instead of a dense 160 MB one."""
    big = 40_000_000
    spread = [[(lab, cnt, [cats[0] * 1_000_003] + cats[1:]) for lab, cnt, cats in rows] for rows in DAYS]
    write_days(tmp_path / "raw", spread)
    opts = PreprocessOptions(max_ind_range=big, workers=1, progress=False)

    def stop(message: str) -> None:
        if message.startswith("write:"):
            raise _Interrupt
    with pytest.raises(_Interrupt):
        preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=stop)
    lookup = tmp_path / "out" / ".work" / "lookup"
    assert (lookup / "hash_keys_0.npy").exists() and not (lookup / "dense_0.npy").exists()
    meta = preprocess(tmp_path / "raw", tmp_path / "out", "x", opts, log=lambda _: None)
    dictionary: dict[int, int] = {}
    ids = []
    for rows in spread:
        for _, _, cats in rows:
            ids.append(dictionary.setdefault(cats[0] % big, len(dictionary)))
    assert meta["cardinalities"][0] == len(dictionary) == 7  # 5 and 1005 no longer collide
    got = np.concatenate([open_split(tmp_path / "out" / s).categorical[:, 0]
                          for s in ("days/day_0", "days/day_1", "test", "calibration")])
    np.testing.assert_array_equal(got, ids)
    assert sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()) < 1 << 20
