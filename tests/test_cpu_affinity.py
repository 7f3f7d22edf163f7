"""The cpu_affinity setting: CPU lists parsed, checked against the CPUs the process may use, applied to all threads."""

from __future__ import annotations

import os
import threading

import pytest

from dlrm_bench.errors import UserError
from dlrm_bench.harness import cpu_affinity as ca
from dlrm_bench.setting_checks import check_settings


def test_cpu_lists_parse_and_print_back() -> None:
    assert ca.parse_cpu_list("0-3,8, 10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert ca.parse_cpu_list("5") == [5] and ca.parse_cpu_list("2,2,1-2") == [1, 2]
    assert ca.compact([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and ca.compact([]) == ""


@pytest.mark.parametrize("text", ["", "a", "1-", "-2", "1,,2", "1-2-3", "0x3"])
def test_malformed_lists_name_the_setting(text: str) -> None:
    with pytest.raises(UserError, match="setting 'cpu_affinity' is .*expected a CPU list like"):
        ca.parse_cpu_list(text)


def test_backwards_range_is_refused() -> None:
    with pytest.raises(UserError, match="range 5-2 runs backwards"):
        ca.parse_cpu_list("5-2")


def test_cpus_outside_the_start_set_are_named() -> None:
    outside = max(ca.STARTED_WITH) + 1
    with pytest.raises(UserError, match=f"CPU\\(s\\) {outside} not available to this process"):
        ca.apply_cpu_affinity(f"{outside}")


def test_every_thread_is_pinned_and_new_threads_inherit() -> None:
    original = os.sched_getaffinity(0)
    release = threading.Event()
    seen: dict[str, set[int]] = {}
    worker = threading.Thread(target=lambda: (release.wait(5), seen.update(old=os.sched_getaffinity(0))))
    worker.start()
    target = [min(ca.STARTED_WITH)]
    try:
        assert ca.apply_cpu_affinity(str(target[0])) == target
        assert os.sched_getaffinity(0) == set(target)
        late = threading.Thread(target=lambda: seen.update(new=os.sched_getaffinity(0)))
        late.start()
        late.join()
        release.set()
        worker.join()
        assert seen["old"] == set(target) and seen["new"] == set(target)
    finally:
        release.set()
        for tid in ca.thread_ids():
            try:
                os.sched_setaffinity(tid, original)
            except OSError:
                pass


def test_config_check_accepts_lists_and_single_cpus() -> None:
    check_settings({"cpu_affinity": "2-15"}, "test")
    check_settings({"cpu_affinity": 3}, "test")
    with pytest.raises(UserError, match="test: setting 'cpu_affinity' is \"two\": expected a CPU list"):
        check_settings({"cpu_affinity": "two"}, "test")
