"""benchmarks/model_server_batching.py: the Server batcher model behaves like the batcher it models."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import model_server_batching as model  # noqa: E402

CASE = dict(qps=200000.0, capacity=205000.0, batch=131072, slots=3, wait_s=0.005, seconds=3.0, buckets=16,
            hand_back_s=0.0008, stalls=0, stall_s=0.0, seed=3)


def test_a_left_behind_sample_waiting_from_its_own_arrival_pads_less_near_capacity() -> None:
    stale = model.simulate("stale", **CASE)
    own = model.simulate("own", **CASE)
    assert own["padding_share"] < 0.5 * stale["padding_share"]
    assert own["batches"] < stale["batches"]


def test_a_light_load_sees_the_wait_and_one_batch() -> None:
    """At 10% of capacity every batch leaves by its deadline: latency ~ the wait plus one batch, either rule."""
    light = dict(CASE, qps=20000.0)
    for policy in ("stale", "own"):
        row = model.simulate(policy, **light)
        assert 4.0 < row["p50_ms"] < 8.0, row


def test_main_writes_its_rows(tmp_path: Path, capsys) -> None:
    assert model.main(["--qps", "50000", "--capacity", "60000", "--batch", "65536", "--seconds", "2.5",
                       "--stalls", "1", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "model_server_batching.json").is_file()
    assert capsys.readouterr().out.count("qps 50,000") == 2
