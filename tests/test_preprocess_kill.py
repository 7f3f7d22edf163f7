"""Preprocessing killed (SIGKILL, no chance to clean up) at many points, then run again: the result is the same
dataset, bit for bit (fingerprint and per-file digests), as one uninterrupted run, and the re-run parses again only
the days whose stage marker was missing when the process died (finished days' files are left untouched).

Each run is a real `preprocess` in a subprocess on synthetic days; the kill points are found by watching its
output folder (a stage marker appearing, a temporary file being written) or by time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from dlrm_bench.criteo.preprocess import PreprocessOptions, preprocess
from dlrm_bench.criteo.synthetic import generate_days

DAYS = 3
R = 100_000
CHUNK = 64 << 10
DRIVER = """
import sys
from pathlib import Path
from dlrm_bench.criteo.preprocess import PreprocessOptions, preprocess
preprocess(Path(sys.argv[1]), Path(sys.argv[2]), "kill", PreprocessOptions(max_ind_range={r}, workers=int(sys.argv[3]),
           progress=False, chunk_bytes={chunk}, compress=True))
""".format(r=R, chunk=CHUNK)

Condition = Callable[[Path], bool]


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kill") / "raw"
    generate_days(folder, "tiny", seed=11, num_days=DAYS, rows_per_day=8_000)
    return folder


@pytest.fixture(scope="module")
def reference(raw) -> dict:
    opts = PreprocessOptions(max_ind_range=R, workers=1, progress=False, chunk_bytes=CHUNK, compress=True)
    return preprocess(raw, raw.parent / "reference", "kill", opts, log=lambda _: None)


def start(raw: Path, out: Path, workers: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(raw), str(out), str(workers)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_when(proc: subprocess.Popen, out: Path, condition: Condition, timeout: float = 60.0) -> bool:
    """SIGKILL the run's whole process group once `condition(out)` holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if condition(out):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.001)
    proc.wait()
    return False


def state(out: Path) -> dict[str, object]:
    """Which per-day markers exist, and the modification times of the finished days' files: those each write
    marker lists (not the last stage's derived files, such as the compressed inputs, which a resumed run
    regenerates until meta.json records them)."""
    work = out / ".work"
    scanned = sorted(int(p.stem[4:]) for p in (work / "scan").glob("day_*.json"))
    written = sorted(int(p.stem[4:]) for p in (work / "write").glob("day_*.json"))
    files = {}
    for k in written:
        listed = json.loads((work / "write" / f"day_{k}.json").read_text())["files"]
        files.update({str(out / rel): (out / rel).stat().st_mtime_ns for rel in listed})
    return {"scanned": scanned, "written": written, "merged": (work / "merge.json").exists(), "files": files,
            "complete": (out / "meta.json").exists()}


def writing(out: Path) -> bool:
    """A file is being written (atomic_path's temporary name exists)."""
    return out.is_dir() and any(out.rglob(".*.tmp"))


def exists(rel: str) -> Condition:
    return lambda o: (o / rel).exists()


def resume_and_compare(raw: Path, out: Path, reference: dict, before: dict) -> str:
    """Run to the end; compare with the reference; check that finished days were not redone."""
    proc = start(raw, out, 1)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fingerprint"] == reference["fingerprint"] and meta["files"] == reference["files"]
    assert not (out / ".work").exists() and not (out / ".work.trash").exists() and not list(out.rglob(".*.tmp"))
    if before["complete"]:  # killed after meta.json was written (during clean-up): nothing is redone
        assert "up to date" in log, (log, before)
    elif before["merged"] or before["scanned"]:
        m = re.search(r"scan: (\d+) of \d+ days to parse \((\d+) already scanned\)", log)
        assert m and int(m.group(2)) == len(before["scanned"]), (log, before)
    if before["merged"] and not before["complete"]:
        assert "merge: dictionaries already built" in log
        m = re.search(r"write: (\d+) of \d+ days to write \((\d+) already written\)", log)
        assert m and int(m.group(2)) == len(before["written"]), (log, before)
    for path, mtime in before["files"].items():
        assert Path(path).stat().st_mtime_ns == mtime, f"{path} was written again"
    return log


POINTS: dict[str, Condition] = {
    "scan, 2nd day": exists(".work/scan/day_0.json"),
    "scan, last day": exists(f".work/scan/day_{DAYS - 2}.json"),
    "merge": lambda o: (o / "dictionaries").is_dir() and any((o / "dictionaries").iterdir()),
    "write, mid-file": lambda o: any((o / "days").rglob(".*.tmp")) if (o / "days").is_dir() else False,
    "write, 2nd day": exists(".work/write/day_0.json"),
    "write, test split": lambda o: any((o / "test").glob(".*.tmp")) if (o / "test").is_dir() else False,
    "finish": exists("row_frequencies.bin"),
    "clean-up": exists("meta.json"),
}


def test_killed_at_each_stage_then_resumed(raw, reference, tmp_path):
    interrupted = []
    for n, (name, condition) in enumerate(POINTS.items()):
        out = tmp_path / f"out_{n}"
        if kill_when(start(raw, out, 1), out, condition):
            interrupted.append(name)
            assert name == "clean-up" or not (out / "meta.json").exists()
        resume_and_compare(raw, out, reference, state(out))
    assert len(interrupted) >= 5, interrupted  # the run was really cut at most of these points


def test_killed_at_timed_points_and_twice_in_a_row(raw, reference, tmp_path):
    t0 = time.monotonic()
    proc = start(raw, tmp_path / "timing", 1)
    proc.communicate(timeout=120)
    total = time.monotonic() - t0
    for n, fraction in enumerate((0.2, 0.5, 0.8)):
        out = tmp_path / f"timed_{n}"
        begin = time.monotonic()
        kill_when(start(raw, out, 1), out, lambda o, b=begin: time.monotonic() - b > fraction * total)
        before = state(out)
        again = time.monotonic()  # a second kill during the resumed run
        kill_when(start(raw, out, 1), out, lambda o, b=again: time.monotonic() - b > 0.5 * fraction * total)
        after = state(out)
        assert set(before["scanned"]) <= set(after["scanned"]) or not after["scanned"]
        resume_and_compare(raw, out, reference, after)


def test_killed_with_parallel_workers(raw, reference, tmp_path):
    out = tmp_path / "parallel"
    kill_when(start(raw, out, 2), out, writing)  # the whole process group: the pool's workers die too
    resume_and_compare(raw, out, reference, state(out))
