"""Console output of long work: progress bars that write whole lines, not redraws, into a log; a LoadGen run that
says it is running."""

from __future__ import annotations

import io
import sys
import time
from types import SimpleNamespace

import pytest

from dlrm_bench.harness.runner import ticking
from dlrm_bench.progress import progress_bar


def test_a_bar_writes_a_few_whole_lines_into_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(total=10_000, desc="work", unit="row") as bar:
        for _ in range(10_000):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3 and "10000/10000" in lines[-1] and lines[-1].startswith("work")


def test_a_disabled_bar_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    for _ in progress_bar(range(5), disable=True):
        pass
    assert log.getvalue() == ""


def test_a_run_says_it_is_running(capsys: pytest.CaptureFixture[str]) -> None:
    counters = SimpleNamespace(samples=0, errors=[])
    with ticking("Offline PerformanceOnly", counters, interval=0.05):
        time.sleep(0.08)
        counters.samples = 1234
        time.sleep(0.1)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Offline PerformanceOnly: 0 s, no query from LoadGen yet")
    assert "1,234 samples answered (" in lines[-1]
    count = len(lines)
    time.sleep(0.12)
    assert len(capsys.readouterr().out.splitlines()) == 0 and count >= 2  # stopped when the test ended


def test_a_failed_engine_ends_the_test_after_the_grace() -> None:
    counters, called = SimpleNamespace(samples=0, errors=[]), []
    with ticking("Server PerformanceOnly", counters, interval=60, on_failure=called.append, grace_s=1.0):
        time.sleep(0.6)
        assert not called  # no error yet
        counters.errors.append("RuntimeError: engine gone")
        time.sleep(0.5)
        assert not called  # within the grace: LoadGen may still end by itself
        time.sleep(1.5)
    assert called == ["RuntimeError: engine gone"]
