"""benchmarks/host_sampler.py: per-thread and machine counters of a running process, and their summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import host_sampler  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "host_sampler.py"

BUSY_CHILD = """
import threading, time, mmap
def touch():
    with mmap.mmap(-1, 32 << 20) as m:
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            m.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KB pages: one fault each
        for k in range(0, len(m), 4096):
            m[k] = 1
        time.sleep(0.3)
t = threading.Thread(target=touch); t.start(); t.join()
"""


def test_samples_a_process_until_it_exits(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD])
    data = host_sampler.sample(child.pid, 0.01, 20.0)
    child.wait()
    n = len(data["t"])
    assert n >= 5 and np.all(np.diff(data["t"]) > 0)
    assert data["vmstat"].shape == (n, len(host_sampler.VMSTAT))
    assert data["cpu"].shape[0] == n and data["cpu"].shape[2] == 3
    assert data["threads"].shape == (n, len(data["tids"]), 3)
    assert child.pid in data["tids"].tolist() and len(data["tids"]) >= 2  # the main thread and the toucher
    assert data["threads"][:, :, 0].max() >= 8000  # the toucher's own faults since it started: 32 MB of 4 KB pages


def test_the_command_line_writes_and_shows(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.4)"])
    out = tmp_path / "s.npz"
    done = subprocess.run([sys.executable, str(SCRIPT), "--pid", str(child.pid), "--out", str(out),
                           "--period-ms", "10"], capture_output=True, text=True, timeout=60)
    child.wait()
    assert done.returncode == 0 and out.is_file() and not list(tmp_path.glob("*.tmp.npz"))
    t = np.load(out)["t"]
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"t0_monotonic_s": float(t[0]) - 1.0}))
    shown = subprocess.run([sys.executable, str(SCRIPT), "--show", str(out), "--result", str(result)],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "samples over" in shown.stdout and "since the run t0" in shown.stdout
    assert "process minor faults biggest windows: 1." in shown.stdout  # times counted from t0, 1 s before


def test_a_gone_process_and_a_missing_file_are_named(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    time.sleep(0.05)
    gone = subprocess.run([sys.executable, str(SCRIPT), "--pid", str(child.pid), "--out", str(tmp_path / "x.npz")],
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 2 and f"process {child.pid} is not running" in gone.stderr
    missing = subprocess.run([sys.executable, str(SCRIPT), "--show", str(tmp_path / "none.npz")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such sample file" in missing.stderr
