"""The cpu_affinity setting: CPU lists parsed, checked against the CPUs the process may use, applied to all threads."""

from __future__ import annotations

import os
import threading

import pytest

from dlrm_bench.errors import UserError
from dlrm_bench.harness import cpu_affinity as ca
from dlrm_bench.settings import Settings


def _restore(original: set[int]) -> None:
    """Every thread of this process back on `original`."""
    for tid in ca.thread_ids():
        try:
            os.sched_setaffinity(tid, original)
        except OSError:
            pass


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
        _restore(original)


def test_config_check_accepts_lists_and_single_cpus() -> None:
    Settings().with_values({"cpu_affinity": "2-15"}, "test")
    assert Settings().with_values({"cpu_affinity": 3}, "test").cpu_affinity == "3"
    with pytest.raises(UserError, match="test: setting 'cpu_affinity' is \"two\": expected a Linux CPU list"):
        Settings().with_values({"cpu_affinity": "two"}, "test")
    Settings().with_values({"cpu_affinity": ca.OFF_GPU_IRQS}, "test")


def _interrupts(tmp_path, nvidia_counts: list[int]):
    """A /proc/interrupts in the kernel's layout over this process's CPUs, the nvidia line with these counts."""
    cpus = sorted(ca.STARTED_WITH)
    head = "    " + " ".join(f"{'CPU' + str(c):>10}" for c in cpus)
    counts = (nvidia_counts + [0] * len(cpus))[:len(cpus)]
    lines = [head, " 130: " + " ".join(f"{n:>10}" for n in counts) + "  PCI-MSI 524288-edge      nvidia",
             " LOC: " + " ".join(f"{1000:>10}" for _ in cpus) + "   Local timer interrupts"]
    path = tmp_path / "interrupts"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_off_gpu_irqs_leaves_out_the_cpus_that_served_the_gpu(tmp_path) -> None:
    cpus = sorted(ca.STARTED_WITH)
    resolved, note = ca.off_gpu_irqs(_interrupts(tmp_path, [700]))
    if len(cpus) == 1:
        assert resolved is None and "every CPU of this process" in note
        return
    assert resolved == ca.compact(cpus[1:]) and f"interrupts on {cpus[0]}" in note
    original = os.sched_getaffinity(0)
    try:
        assert ca.apply_cpu_affinity(ca.OFF_GPU_IRQS, interrupts=_interrupts(tmp_path, [700])) == cpus[1:]
        assert os.sched_getaffinity(0) == set(cpus[1:])
    finally:
        _restore(original)


def test_off_gpu_irqs_stays_as_started_without_gpu_interrupts(tmp_path, capsys) -> None:
    original = os.sched_getaffinity(0)
    assert ca.off_gpu_irqs(_interrupts(tmp_path, [0]))[0] is None
    assert ca.apply_cpu_affinity(ca.OFF_GPU_IRQS, interrupts=_interrupts(tmp_path, [])) is None
    assert "no nvidia interrupt" in capsys.readouterr().out and os.sched_getaffinity(0) == original
    every = _interrupts(tmp_path, [5] * len(ca.STARTED_WITH))
    assert ca.apply_cpu_affinity(ca.OFF_GPU_IRQS, interrupts=every) is None
    assert "every CPU of this process" in capsys.readouterr().out and os.sched_getaffinity(0) == original
