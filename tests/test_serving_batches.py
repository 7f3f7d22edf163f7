"""How the Triton model packs the requests one execute() got into engine batches (serving/backend.plan_batches)."""

from __future__ import annotations

import numpy as np

from dlrm_bench.triton_server.backend import Job, plan_batches


def ranges_job(index: int, lengths: list[int], start: int = 0) -> Job:
    ends = start + np.cumsum(lengths)
    ranges = np.stack([ends - np.asarray(lengths), ends], axis=1).astype(np.int64)
    return Job(replies=None, index=index, pairs=int(sum(lengths)), ranges=ranges)  # type: ignore[arg-type]


def rows_job(index: int, pairs: int) -> Job:
    numeric = np.full((pairs, 13), index, dtype=np.float32)
    return Job(replies=None, index=index, pairs=pairs, numeric=numeric,  # type: ignore[arg-type]
               categorical=np.zeros((pairs, 26), dtype=np.int32))


def test_whole_jobs_are_packed_in_order_up_to_the_limit() -> None:
    jobs = [ranges_job(0, [100, 50]), ranges_job(1, [200], 1000), ranges_job(2, [300], 5000), ranges_job(3, [10], 9000)]
    batches = plan_batches(jobs, 400)
    assert [[p.job.index for p in b] for b in batches] == [[0, 1], [2, 3]]
    assert [sum(p.pairs for p in b) for b in batches] == [350, 310]
    for job in jobs:  # each job sits whole in one batch: one part, one pending batch
        assert job.parts == [None] and job.pending == 1
    np.testing.assert_array_equal(batches[0][1].ranges, [[1000, 1200]])


def test_a_job_larger_than_a_batch_gets_batches_of_its_own() -> None:
    jobs = [ranges_job(0, [30]), ranges_job(1, [250, 250], 30), ranges_job(2, [40], 530)]
    batches = plan_batches(jobs, 200)
    owners = [[p.job.index for p in b] for b in batches]
    assert owners[0] == [0] and owners[-1] == [2] and all(o == [1] for o in owners[1:-1])
    assert all(sum(p.pairs for p in b) <= 200 for b in batches)
    middle = [b[0] for b in batches[1:-1]]
    assert [p.part for p in middle] == list(range(len(middle))) == list(range(jobs[1].pending))
    covered = np.concatenate([np.arange(s, e) for p in middle for s, e in p.ranges])
    np.testing.assert_array_equal(covered, np.arange(30, 530))


def test_rows_jobs_are_cut_into_row_slices() -> None:
    jobs = [rows_job(0, 5), rows_job(1, 9), rows_job(2, 3)]
    batches = plan_batches(jobs, 4)
    assert [[(p.job.index, p.lo, p.hi) for p in b] for b in batches] == [
        [(0, 0, 4)], [(0, 4, 5)], [(1, 0, 4)], [(1, 4, 8)], [(1, 8, 9)], [(2, 0, 3)]]
    assert all(sum(p.pairs for p in b) <= 4 for b in batches)


def test_model_inflight_defaults_to_the_clients_and_can_differ(tmp_path) -> None:
    from dlrm_bench.settings import Settings
    from dlrm_bench.triton_server.repository import spec_from_settings

    def spec(settings: dict) -> int:
        return spec_from_settings("cpu", tmp_path, tmp_path, tmp_path, Settings.from_dict(settings),
                                  tmp_path / "info").inflight

    assert spec({}) == 2
    assert spec({"inflight_batches": 6}) == 6
    assert spec({"inflight_batches": 6, "triton_model_inflight": 3}) == 3
