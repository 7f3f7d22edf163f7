"""The aggregation trace: reference numbers, equivalence with one-at-a-time draws, edge cases, bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from dlrm_bench import cli
from dlrm_bench.criteo import partition
from dlrm_bench.criteo.schema import CRITEO_TB_TEST_PAIRS, CRITEO_TB_TEST_SAMPLES
from dlrm_bench.errors import UserError

DATA = Path(__file__).resolve().parent / "data"
QUANTILES = np.array([100, 100, 200, 200, 200, 200, 200, 200, 200, 200,
                      200, 200, 200, 200, 300, 300, 400, 500, 600, 700])


def reference_sizes(num_pairs: int, quantiles: np.ndarray) -> list[int]:
    """The reference's loop, one global draw per sample after np.random.seed(123), written out plainly."""
    state = np.random.get_state()
    try:
        np.random.seed(123)
        offsets, qo = [], 0
        while True:
            offsets.append(qo)
            qo = min(qo + int(quantiles[np.random.randint(low=0, high=len(quantiles))]), num_pairs)
            if qo >= num_pairs:
                break
        offsets.append(qo)
    finally:
        np.random.set_state(state)
    return list(np.diff(offsets))


def verification_lines() -> list[str]:
    """The lines after "2. Verify the trace" in the reference's verification file."""
    text = (DATA / "dist_trace_verification.txt").read_text().splitlines()
    start = next(i for i, line in enumerate(text) if line.startswith("2. Verify the trace"))
    return [line.strip() for line in text[start + 1:] if line.strip()]


@pytest.fixture
def qfile(tmp_path: Path) -> Path:
    """The reference quantiles in a file of the test's own."""
    path = tmp_path / "quantiles.txt"
    path.write_text(", ".join(map(str, QUANTILES)) + "\n")
    return path


@pytest.fixture(scope="module")
def full_trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, Path]:
    out = tmp_path_factory.mktemp("partition")
    return partition.write_partition(CRITEO_TB_TEST_PAIRS, out), out


def test_default_quantile_file_matches_reference_values() -> None:
    np.testing.assert_array_equal(partition.load_quantiles(None), QUANTILES)


def test_full_test_set_gives_reference_sample_count(full_trace: tuple[np.ndarray, Path]) -> None:
    offsets, out = full_trace
    assert offsets.dtype == np.int32
    assert len(offsets) - 1 == CRITEO_TB_TEST_SAMPLES
    assert offsets[0] == 0 and offsets[-1] == CRITEO_TB_TEST_PAIRS
    np.testing.assert_array_equal(np.load(out / partition.PARTITION_FILE), offsets)


def test_first_hundred_lines_equal_reference_verification_trace(full_trace: tuple[np.ndarray, Path]) -> None:
    _, out = full_trace
    expected = verification_lines()
    assert len(expected) == 100 and expected[0] == "0, 200, 200" and expected[99] == "26800, 27000, 200"
    lines = (out / partition.TRACE_FILE).read_text().splitlines()
    assert len(lines) == CRITEO_TB_TEST_SAMPLES
    assert lines[:100] == expected
    assert lines[-1] == "89137300, 89137319, 19"


@pytest.mark.parametrize("num_pairs", [1, 99, 100, 101, 250, 1_000, 12_345, 270_001])
def test_block_draws_equal_one_at_a_time_draws(num_pairs: int) -> None:
    assert partition.aggregation_sizes(num_pairs, QUANTILES).tolist() == reference_sizes(num_pairs, QUANTILES)


def test_block_draws_equal_one_at_a_time_draws_other_quantiles() -> None:
    quantiles = np.array([1, 3, 7])
    assert partition.aggregation_sizes(5_000, quantiles).tolist() == reference_sizes(5_000, quantiles)


def test_global_random_state_is_untouched() -> None:
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    partition.aggregation_sizes(10_000, QUANTILES)
    assert np.random.rand() == expected


def test_fewer_pairs_than_first_draw_gives_one_truncated_sample(tmp_path: Path, qfile: Path) -> None:
    offsets = partition.write_partition(150, tmp_path, qfile)  # the first draw is 200
    assert offsets.tolist() == [0, 150]
    assert (tmp_path / partition.TRACE_FILE).read_text() == "0, 150, 150\n"


def test_one_pair(tmp_path: Path, qfile: Path) -> None:
    assert partition.write_partition(1, tmp_path, qfile).tolist() == [0, 1]
    assert (tmp_path / partition.TRACE_FILE).read_text() == "0, 1, 1\n"


def test_exact_multiple_is_not_followed_by_an_empty_sample() -> None:
    sizes = partition.aggregation_sizes(800, QUANTILES)  # reference draws 200, 200, 200, 200 first
    assert sizes.tolist() == [200, 200, 200, 200]


def test_zero_pairs_is_an_error(tmp_path: Path, qfile: Path) -> None:
    with pytest.raises(UserError, match="at least 1"):
        partition.write_partition(0, tmp_path, qfile)
    with pytest.raises(UserError, match="at least 1"):
        partition.aggregation_sizes(0, QUANTILES)


@pytest.mark.parametrize("content", ["", "100, 200, abc\n", "100, -5, 200\n", "\n"])
def test_bad_quantile_file_names_the_file(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad_quantile.txt"
    bad.write_text(content)
    with pytest.raises(UserError, match="bad_quantile.txt"):
        partition.write_partition(1_000, tmp_path / "out", bad)
    assert not (tmp_path / "out" / partition.PARTITION_FILE).exists()


def test_missing_quantile_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nowhere.txt: quantile file not found"):
        partition.load_quantiles(tmp_path / "nowhere.txt")


def test_cli_writes_both_files_and_reports_errors_in_one_line(tmp_path: Path, qfile: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["make-partition", "--num-pairs", "1000", "--output", str(tmp_path),
                     "--quantile-file", str(qfile)]) == 0
    offsets = np.load(tmp_path / partition.PARTITION_FILE)
    assert offsets[-1] == 1000 and np.all(np.diff(offsets) > 0)
    lines = (tmp_path / partition.TRACE_FILE).read_text().splitlines()
    assert len(lines) == len(offsets) - 1
    capsys.readouterr()
    assert cli.main(["make-partition", "--num-pairs", "10", "--output", str(tmp_path),
                     "--quantile-file", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.txt" in err


def test_main_accepts_a_namespace(tmp_path: Path, qfile: Path) -> None:
    args = argparse.Namespace(num_pairs=300, output=tmp_path / "out", quantile_file=qfile)
    assert partition.main(args) == 0
    assert np.load(tmp_path / "out" / partition.PARTITION_FILE).tolist() == [0, 200, 300]
