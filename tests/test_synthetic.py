"""Synthetic Criteo days: exact raw format, determinism, realistic shape, learnable labels, metadata, CLI."""

from __future__ import annotations

import functools
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from dlrm_bench import cli
from dlrm_bench.criteo import synthetic
from dlrm_bench.criteo.schema import CRITEO_TB_CARDINALITIES, NUM_FIELDS
from dlrm_bench.errors import UserError

ROWS = 20_000
INT_FIELD = re.compile(rb"-?[0-9]+")
HEX_FIELD = re.compile(rb"[0-9a-f]{8}")


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny-scale days of 20,000 rows, seed 5."""
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate_days(out, "tiny", seed=5, num_days=2, rows_per_day=ROWS, workers=1)
    return out


@functools.lru_cache(maxsize=8)
def parse(path: Path) -> tuple[np.ndarray, np.ndarray, list[list[bytes]]]:
    """labels int [n], counts int64 [n, 13] (missing -> 0, sign kept), categories [n][26] (b"" = missing)."""
    labels, counts, cats = [], [], []
    for line in path.read_bytes().split(b"\n")[:-1]:
        fields = line.split(b"\t")
        labels.append(int(fields[0]))
        counts.append([int(f) if f else 0 for f in fields[1:14]])
        cats.append(fields[14:])
    return np.array(labels), np.array(counts, dtype=np.int64), cats


def test_same_seed_gives_identical_bytes_and_other_seed_differs(two_days: Path, tmp_path: Path) -> None:
    again = synthetic.generate_days(tmp_path / "a", "tiny", seed=5, num_days=2, rows_per_day=ROWS, workers=1)
    assert [p.name for p in again] == ["day_0", "day_1"]
    for path in again:
        assert path.read_bytes() == (two_days / path.name).read_bytes()
    other = synthetic.generate_days(tmp_path / "b", "tiny", seed=6, num_days=1, rows_per_day=ROWS, workers=1)
    assert other[0].read_bytes() != (two_days / "day_0").read_bytes()


def test_bytes_do_not_depend_on_worker_count(tmp_path: Path) -> None:
    rows = synthetic.CHUNK_ROWS + 1_000  # two chunks, so the pool has work to reorder
    one = synthetic.generate_days(tmp_path / "one", "tiny", seed=3, num_days=1, rows_per_day=rows, workers=1)
    two = synthetic.generate_days(tmp_path / "two", "tiny", seed=3, num_days=1, rows_per_day=rows, workers=2)
    assert one[0].read_bytes() == two[0].read_bytes()
    assert one[0].read_bytes().count(b"\n") == rows


def test_rows_follow_criteo_raw_format(two_days: Path) -> None:
    data = (two_days / "day_0").read_bytes()
    assert data.endswith(b"\n") and b"\r" not in data
    lines = data.split(b"\n")[:-1]
    assert len(lines) == ROWS
    empty_ints = empty_cats = negatives = 0
    for line in lines:
        fields = line.split(b"\t")
        assert len(fields) == NUM_FIELDS
        assert fields[0] in (b"0", b"1")
        for f in fields[1:14]:
            assert f == b"" or INT_FIELD.fullmatch(f), f
            empty_ints += f == b""
            negatives += f.startswith(b"-")
        for f in fields[14:]:
            assert f == b"" or HEX_FIELD.fullmatch(f), f
            empty_cats += f == b""
    assert empty_ints > 0.05 * ROWS and empty_cats > 0.05 * ROWS and negatives > 0.05 * ROWS


def test_missing_and_negative_rates_follow_the_per_field_rates(two_days: Path) -> None:
    _, counts, cats = parse(two_days / "day_0")
    lines = (two_days / "day_0").read_bytes().split(b"\n")[:-1]
    int_missing = np.array([[f == b"" for f in line.split(b"\t")[1:14]] for line in lines]).mean(axis=0)
    cat_missing = np.array([[f == b"" for f in row] for row in cats]).mean(axis=0)
    np.testing.assert_allclose(int_missing, synthetic.DENSE_MISSING, atol=0.015)
    np.testing.assert_allclose(cat_missing, synthetic.CAT_MISSING, atol=0.015)
    negative = (counts < 0).mean(axis=0)
    assert 0.08 < negative[1] < 0.14  # I2, the field with negatives in real Criteo rows
    assert negative[0] == 0 and counts.min() >= -3


def test_counts_are_heavy_tailed_and_within_the_int8_input_range(two_days: Path) -> None:
    _, counts, _ = parse(two_days / "day_0")
    i5 = counts[:, 4]
    assert i5.max() > 100 * np.median(i5[i5 > 0])
    assert counts.max() <= synthetic.COUNT_MAX and np.log1p(counts.max()) < 14.2313


def test_category_frequencies_follow_a_power_law(two_days: Path) -> None:
    _, _, cats = parse(two_days / "day_0")
    freq = np.array(sorted(Counter(row[0] for row in cats).values(), reverse=True), dtype=np.float64)
    ranks = np.arange(1, 51)
    slope = np.polyfit(np.log(ranks), np.log(freq[:50]), 1)[0]
    assert -1.6 < slope < -0.8, slope  # Zipf-like: frequency ~ rank^-a, a in [1.05, 1.35]
    assert freq[0] > 0.05 * ROWS and (freq == 1).sum() > 100  # a heavy head and a long tail


def test_same_vocabulary_index_has_the_same_hex_on_every_day(two_days: Path) -> None:
    tops = []
    for day in ("day_0", "day_1"):
        _, _, cats = parse(two_days / day)
        tops.append([Counter(row[j] for row in cats if row[j]).most_common(3) for j in range(26)])
    assert [[v for v, _ in t] for t in tops[0]] == [[v for v, _ in t] for t in tops[1]]


def test_hex_values_are_a_fixed_function_of_feature_and_index() -> None:
    a = synthetic.make_teacher(1, synthetic.vocabulary_sizes(1_000), 0.1)
    b = synthetic.make_teacher(1, synthetic.vocabulary_sizes(1_000), 0.1)
    index = np.arange(1_000, dtype=np.int64)
    np.testing.assert_array_equal(synthetic.hex_values(a, 3, index), synthetic.hex_values(b, 3, index))
    assert len(np.unique(synthetic.hex_values(a, 3, index))) == 1_000
    assert not np.array_equal(synthetic.hex_values(a, 3, index), synthetic.hex_values(a, 4, index))


def test_click_rate_near_target(two_days: Path) -> None:
    labels = np.concatenate([parse(two_days / d)[0] for d in ("day_0", "day_1")])
    assert 0.09 < labels.mean() < 0.11
    meta = json.loads((two_days / synthetic.META_FILE).read_text())
    assert meta["click_rate"] == pytest.approx(labels.mean())
    assert meta["clicks_per_day"] == [int(parse(two_days / d)[0].sum()) for d in ("day_0", "day_1")]


def test_full_day_click_rate_is_criteos(tmp_path: Path) -> None:
    synthetic.generate_days(tmp_path, "full-day", seed=1, rows_per_day=30_000, workers=1)
    meta = json.loads((tmp_path / synthetic.META_FILE).read_text())
    assert 0.025 < meta["click_rate"] < 0.042
    assert max(meta["vocabulary_sizes"]) == synthetic.SCALES["full-day"].max_vocab


def test_labels_are_learnable(two_days: Path) -> None:
    meta = json.loads((two_days / synthetic.META_FILE).read_text())
    assert meta["teacher_auc"] > 0.78 and meta["teacher_auc_rows"] == ROWS // 2
    # A model that reads only the files: logistic regression on one-hot categories plus log1p counts.
    train, test = parse(two_days / "day_0"), parse(two_days / "day_1")
    vocab: dict[tuple[int, bytes], int] = {}
    for row in train[2]:
        for j, v in enumerate(row):
            vocab.setdefault((j, v), len(vocab))
    model = LogisticRegression(C=0.1, max_iter=200).fit(one_hot(train, vocab), train[0])
    half = ROWS // 2
    auc = roc_auc_score(test[0][:half], model.predict_proba(one_hot(test, vocab)[:half])[:, 1])
    print(f"logistic regression AUC {auc:.4f}, teacher AUC {meta['teacher_auc']:.4f}")
    assert auc > 0.62, auc


def one_hot(part: tuple[np.ndarray, np.ndarray, list[list[bytes]]], vocab: dict[tuple[int, bytes], int]) -> csr_matrix:
    """Sparse design matrix [n, len(vocab) + 13]: one column per (feature, value) seen in training, then counts."""
    _, counts, cats = part
    rows, cols = [], []
    for i, row in enumerate(cats):
        for j, v in enumerate(row):
            col = vocab.get((j, v))
            if col is not None:
                rows.append(i)
                cols.append(col)
    n, width = len(cats), len(vocab) + 13
    onehot = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, width))
    dense = np.log1p(np.maximum(counts, 0)).astype(np.float32) / 5
    dense_cols = csr_matrix((dense.ravel(), (np.repeat(np.arange(n), 13), np.tile(np.arange(13), n) + len(vocab))),
                            shape=(n, width))
    return (onehot + dense_cols).tocsr()


def test_teacher_uses_pairwise_interactions() -> None:
    teacher = synthetic.make_teacher(2, synthetic.vocabulary_sizes(5_000), 0.1)
    _, dense_log, cat_index = synthetic._sample_features(teacher, synthetic._stream(2, 7), 20_000)
    full = teacher.logits(dense_log, cat_index)
    teacher.cat_latent = [np.zeros_like(v) for v in teacher.cat_latent]
    teacher.dense_latent = np.zeros_like(teacher.dense_latent)
    linear_only = teacher.logits(dense_log, cat_index)
    assert np.std(full - linear_only) > 0.8 * np.std(linear_only)


def test_meta_describes_the_run_and_rerun_is_skipped(two_days: Path) -> None:
    meta = json.loads((two_days / synthetic.META_FILE).read_text())
    assert meta["seed"] == 5 and meta["scale"] == "tiny" and meta["num_days"] == 2
    assert meta["rows_per_day"] == ROWS and meta["total_rows"] == 2 * ROWS
    assert meta["files"] == {p: (two_days / p).stat().st_size for p in ("day_0", "day_1")}
    assert len(meta["vocabulary_sizes"]) == 26
    before = (two_days / "day_0").stat().st_mtime_ns
    synthetic.generate_days(two_days, "tiny", seed=5, num_days=2, rows_per_day=ROWS, workers=1)
    assert (two_days / "day_0").stat().st_mtime_ns == before


def test_changed_request_or_damaged_file_regenerates(tmp_path: Path) -> None:
    first = synthetic.generate_days(tmp_path, "tiny", seed=1, num_days=1, rows_per_day=500, workers=1)
    content = first[0].read_bytes()
    first[0].write_bytes(content[:100])  # a damaged day file must not count as complete
    synthetic.generate_days(tmp_path, "tiny", seed=1, num_days=1, rows_per_day=500, workers=1)
    assert first[0].read_bytes() == content
    synthetic.generate_days(tmp_path, "tiny", seed=2, num_days=1, rows_per_day=500, workers=1)
    assert first[0].read_bytes() != content
    assert json.loads((tmp_path / synthetic.META_FILE).read_text())["seed"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


def test_gzip_days_hold_the_same_text_and_are_deterministic(two_days: Path, tmp_path: Path) -> None:
    a = synthetic.generate_days(tmp_path / "a", "tiny", seed=5, num_days=1, rows_per_day=ROWS, gzip=True, workers=1)
    b = synthetic.generate_days(tmp_path / "b", "tiny", seed=5, num_days=1, rows_per_day=ROWS, gzip=True, workers=1)
    assert a[0].name == "day_0.gz"
    assert a[0].read_bytes() == b[0].read_bytes()
    assert gzip.decompress(a[0].read_bytes()) == (two_days / "day_0").read_bytes()


def test_tiny_vocabularies_keep_criteos_shape_and_stay_small() -> None:
    tiny = synthetic.vocabulary_sizes(synthetic.SCALES["tiny"].max_vocab)
    cards = np.array(CRITEO_TB_CARDINALITIES)
    assert tiny.sum() < 300_000 and tiny.max() == 40_000
    small_features = cards <= synthetic.KEEP_VOCAB_BELOW
    np.testing.assert_array_equal(tiny[small_features], cards[small_features])
    order = np.argsort(cards, kind="stable")
    assert np.all(np.diff(tiny[order]) >= 0)  # scaling keeps the order of sizes
    np.testing.assert_array_equal(synthetic.vocabulary_sizes(10**9), cards)


def test_int_formatting_edge_values() -> None:
    counts = np.array([[0, 1, 9, 10, 999, 1000, synthetic.COUNT_MAX, -1, -3, synthetic.COUNT_MISSING,
                        123456, 1_000_000, 42]])
    hexes = np.array([[0x0123ABCD, 0xFFFFFFFF] + [0] * 24], dtype=np.uint32)
    missing = np.zeros((1, 26), dtype=bool)
    missing[0, 25] = True
    text = synthetic.format_rows(np.array([1], dtype=np.int8), counts, hexes, missing).tobytes()
    assert text == (b"1\t0\t1\t9\t10\t999\t1000\t1500000\t-1\t-3\t\t123456\t1000000\t42\t0123abcd\tffffffff\t"
                    + b"00000000\t" * 23 + b"\n")


def test_bad_requests_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown scale"):
        synthetic.generate_days(tmp_path, "huge", seed=1)
    with pytest.raises(UserError, match="at least one"):
        synthetic.generate_days(tmp_path, "tiny", seed=1, rows_per_day=0)
    with pytest.raises(UserError, match="click rate"):
        synthetic.generate_days(tmp_path, "tiny", seed=1, rows_per_day=10, click_rate=1.5)


def test_cli_generate_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["generate-data", "--scale", "tiny", "--output", str(tmp_path), "--seed", "4",
                       "--days", "2", "--rows-per-day", "300"])
    assert status == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day_0", "day_1", synthetic.META_FILE]
    assert (tmp_path / "day_1").read_bytes().count(b"\n") == 300
    assert "teacher AUC" in capsys.readouterr().out
