"""The CPU engine on a model larger than the free RAM: one `dlrm-bench run --engine=cpu` (the real LoadGen run)
under a memory and page-cache monitor.

    nice .venv/bin/python benchmarks/bench_cpu_mmap.py --label mmap --cold -- --dataset criteo-tb-random \\
        --engine cpu --scenarios Offline --test_mode PerformanceOnly --min_duration 60

Everything after `--` goes to `dlrm-bench run` (add `--set embedding_weights_in_ram_part=0.05` for a hot part in
RAM). `--cold` first drops the tables file from the page cache (posix_fadvise DONTNEED: only this file's clean pages
that no process maps; nothing else on the machine is touched). While the run lasts, every 0.5 s: its VmRSS, RssAnon
and RssFile, major page faults, bytes it read from disk (/proc/PID/io) and the machine's MemAvailable; every 5 s
the tables file's page-cache residency (fincore). Peak RSS is the kernel's ru_maxrss of the run (file-backed pages
of the map included: they are page cache the kernel may reclaim, not the process's own memory). Throughput over
time comes from the run's sut_completions.npy.

Writes build/bench/bench_cpu_mmap[-LABEL].json (or --out) and prints a summary.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dlrm_bench.paths import models_dir, scratch_path  # noqa: E402
from dlrm_bench.quant.tables import TABLES_FILE  # noqa: E402

GiB = 1 << 30


def page_cache_bytes(path: Path) -> int | None:
    """Bytes of `path` resident in the page cache (util-linux fincore), or None without it."""
    if shutil.which("fincore") is None:
        return None
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True)
    try:
        return int(out.stdout.split()[0])
    except (IndexError, ValueError):
        return None


def drop_from_page_cache(path: Path) -> None:
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _status(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM (bytes), majflt, read_bytes of a live process ({} once it is gone)."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out["minflt"], out["majflt"] = int(fields[7]), int(fields[9])
        out["cpu_ticks"] = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])  # + children
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                out["read_bytes"] = int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return {}
    return out


def busy_ticks() -> int:
    """Clock ticks every CPU of the machine spent busy (not idle or iowait) since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class Monitor(threading.Thread):
    def __init__(self, pid: int, tables: Path) -> None:
        super().__init__(daemon=True)
        self.pid, self.tables = pid, tables
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        last_cache = -10.0
        while not self.stop.is_set():
            now = time.monotonic() - self.start_time
            row: dict[str, Any] = {"t": round(now, 2), **_status(self.pid), "mem_available": mem_available(),
                                   "machine_busy_ticks": busy_ticks()}
            if now - last_cache >= 5.0:
                row["tables_cached"] = page_cache_bytes(self.tables)
                last_cache = now
            self.samples.append(row)
            self.stop.wait(0.5)


def throughput_over_time(completions: Path, pieces: int = 6) -> list[dict[str, float]]:
    """pairs/s in equal time slices of the run (sut_completions.npy: seconds since start, samples, pairs)."""
    if not completions.exists():
        return []
    c = np.load(completions)
    if c.size == 0:
        return []
    end = float(c[:, 0].max())
    edges = np.linspace(0.0, end, pieces + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (c[:, 0] > lo) & (c[:, 0] <= hi)
        out.append({"from_s": round(float(lo), 1), "to_s": round(float(hi), 1),
                    "pairs_per_second": round(float(c[sel, 2].sum()) / max(hi - lo, 1e-9), 1),
                    "samples_per_second": round(float(c[sel, 1].sum()) / max(hi - lo, 1e-9), 2)})
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default="")
    parser.add_argument("--tables", type=Path, default=models_dir() / "criteo-tb-random" / TABLES_FILE,
                        help="the .bin file whose page-cache residency is watched")
    parser.add_argument("--cold", action="store_true", help="drop the tables file from the page cache first")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv[:split])
    run_args = argv[split + 1:]
    suffix = f"-{args.label}" if args.label else ""
    if "--log_dir" not in run_args and "--log-dir" not in run_args:
        run_args += ["--log_dir", str(scratch_path() / "bench" / f"cpu_mmap_logs{suffix}")]
    log_dir = Path(run_args[run_args.index("--log_dir" if "--log_dir" in run_args else "--log-dir") + 1])

    if args.cold:
        drop_from_page_cache(args.tables)
    cached_before = page_cache_bytes(args.tables)
    cmd = [str(REPO / ".venv" / "bin" / "dlrm-bench"), "run", *run_args]
    print(f"$ {' '.join(cmd)}\n  tables cached before: "
          f"{'?' if cached_before is None else f'{cached_before / GiB:.2f} GiB'}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd)
    monitor = Monitor(proc.pid, args.tables)
    monitor.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    monitor.stop.set()
    monitor.join()
    cached_after = page_cache_bytes(args.tables)

    results = sorted(glob.glob(str(log_dir / "latest" / "*" / "dlrm" / "*" / "*" / "*" / "result.json")))
    result = json.loads(Path(results[-1]).read_text()) if results else {}
    live = [s for s in monitor.samples if "VmRSS" in s]

    def peak(key: str) -> int:
        return max((s.get(key, 0) for s in live), default=0)

    first, last = (live[0], live[-1]) if live else ({}, {})
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB:.1f} GiB RAM",
        "command": cmd, "returncode": proc.returncode, "wall_s": round(wall, 1), "cold_start": args.cold,
        "tables_file_bytes": args.tables.stat().st_size if args.tables.exists() else None,
        "tables_cached_before": cached_before, "tables_cached_after": cached_after,
        "peak_rss_bytes": usage.ru_maxrss * 1024, "peak_rss_anon_bytes": peak("RssAnon"),
        "peak_rss_file_bytes": peak("RssFile"), "min_mem_available_bytes": min(
            (s["mem_available"] for s in monitor.samples), default=0),
        "major_faults": last.get("majflt", 0) - first.get("majflt", 0),
        "minor_faults": last.get("minflt", 0) - first.get("minflt", 0),
        "disk_read_bytes": last.get("read_bytes", 0) - first.get("read_bytes", 0),
        # CPU seconds the rest of the machine used meanwhile (neighbours, the monitor): a noisy run shows here
        "other_cpu_seconds": round(((last.get("machine_busy_ticks", 0) - first.get("machine_busy_ticks", 0))
                                    - (last.get("cpu_ticks", 0) - first.get("cpu_ticks", 0)))
                                   / os.sysconf("SC_CLK_TCK"), 1),
        "result_json": results[-1] if results else None,
        "samples_per_second": result.get("samples_per_second"), "pairs_per_second": result.get("pairs_per_second"),
        "result_valid": result.get("result_valid"), "engine_settings": result.get("settings"),
        "over_time": [], "timeline": monitor.samples,
    }
    if results:
        summary["over_time"] = throughput_over_time(Path(results[-1]).parent / "sut_completions.npy")
    out = args.out or scratch_path() / "bench" / f"bench_cpu_mmap{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")

    def gib(x: int | None) -> str:
        return "?" if x is None else f"{x / GiB:.2f} GiB"

    print(f"\nwall {wall:.0f} s, rc {proc.returncode}; samples/s {summary['samples_per_second']}, pairs/s "
          f"{summary['pairs_per_second']}, valid {summary['result_valid']}")
    print(f"CPU seconds the rest of the machine used meanwhile: {summary['other_cpu_seconds']} "
          f"(of {(os.cpu_count() or 1) * wall:.0f})")
    print(f"peak RSS {gib(summary['peak_rss_bytes'])} (anon {gib(summary['peak_rss_anon_bytes'])}, file-backed "
          f"{gib(summary['peak_rss_file_bytes'])}); MemAvailable min {gib(summary['min_mem_available_bytes'])}")
    print(f"tables in page cache {gib(cached_before)} -> {gib(cached_after)} of {gib(summary['tables_file_bytes'])};"
          f" page faults {summary['major_faults']:,} major, {summary['minor_faults']:,} minor; read from disk "
          f"{gib(summary['disk_read_bytes'])}")
    for piece in summary["over_time"]:
        print(f"  {piece['from_s']:7.1f}-{piece['to_s']:7.1f} s: {piece['pairs_per_second']:10,.0f} pairs/s")
    print(f"wrote {out}")
    return int(proc.returncode != 0)


if __name__ == "__main__":
    raise SystemExit(main())
