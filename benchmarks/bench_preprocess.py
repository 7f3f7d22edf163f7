"""Throughput of the raw day reader and of preprocessing (rows/s and MB/s per core); writes JSON.

Inputs are made from the 1,000 real Criteo rows in tests/data/train_1000.txt (tiled to --rows rows):
  padded   every row with all 40 fields (the layout of the Criteo Terabyte day files): the parser's fast path
  kaggle   the rows as they are, 53% with 37 or 38 fields (trailing empty fields dropped): the general path
  gzip     `padded`, gzip-compressed (level 6), as day_k.gz files usually are
Reader numbers are for one process (one core); `cpu_s` is its CPU time. Preprocessing runs the full pipeline on
--days copies of the padded day with --workers processes.

    .venv/bin/python benchmarks/bench_preprocess.py [--rows 400000] [--days 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from dlrm_bench import paths  # noqa: E402
from dlrm_bench.criteo.preprocess import PreprocessOptions, preprocess  # noqa: E402
from dlrm_bench.criteo.reader import DEFAULT_CHUNK_BYTES, DayReader  # noqa: E402

SAMPLE = REPO / "tests" / "data" / "train_1000.txt"
"""The Criteo Kaggle sample rows (tests/data/README.md)."""


def sample_lines() -> list[str]:
    return SAMPLE.read_text().splitlines()


def make_inputs(folder: Path, rows: int) -> dict[str, Path]:
    """Write the padded, kaggle and gzip inputs of `rows` rows each."""
    lines = sample_lines()
    padded = ["\t".join(l.split("\t") + [""] * (40 - len(l.split("\t")))) for l in lines]
    out = {}
    for name, src in (("padded", padded), ("kaggle", lines)):
        block = ("\n".join(src) + "\n").encode()
        path = folder / name
        with open(path, "wb") as f:
            for _ in range(rows // len(src)):
                f.write(block)
        out[name] = path
    gz = folder / "padded.gz"
    with open(out["padded"], "rb") as src_f, gzip.open(gz, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src_f, dst, 1 << 20)
    out["gzip"] = gz
    return out


def bench_reader(path: Path, chunk_bytes: int, repeats: int) -> dict:
    """Best of `repeats` full passes over the file in this process."""
    best = None
    for _ in range(repeats):
        reader = DayReader(path, chunk_bytes=chunk_bytes)
        wall, cpu = time.perf_counter(), time.process_time()
        rows = sum(len(c) for c in reader)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or cpu < best["cpu_s"]:
            best = {"rows": rows, "text_bytes": reader.stats.bytes, "file_bytes": path.stat().st_size,
                    "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
    best["rows_per_s_per_core"] = round(best["rows"] / best["cpu_s"])
    best["mb_per_s_per_core"] = round(best["text_bytes"] / best["cpu_s"] / 1e6, 1)
    return best


def bench_preprocess(day: Path, folder: Path, days: int, workers: int) -> dict:
    raw = folder / "raw"
    raw.mkdir()
    for k in range(days):
        (raw / f"day_{k}").symlink_to(day)
    out = folder / "out"
    wall, cpu = time.perf_counter(), _cpu_seconds()
    meta = preprocess(raw, out, "bench", PreprocessOptions(workers=workers, progress=False), log=lambda _: None)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    rows = meta["train_rows"] + sum(d["rows"] for d in meta["days"][-1:])
    text = days * day.stat().st_size
    return {"days": days, "workers": workers, "rows": rows, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "rows_per_s": round(rows / wall), "mb_per_s": round(text / wall / 1e6, 1),
            "rows_per_s_per_core": round(rows / cpu), "mb_per_s_per_core": round(text / cpu / 1e6, 1),
            "note": "each day is parsed twice (scan, then write); per core = rows / CPU seconds of all processes"}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-bytes", type=int, default=DEFAULT_CHUNK_BYTES)
    ap.add_argument("--output", type=Path, default=None, help="JSON path (default build/bench/preprocess.json)")
    args = ap.parse_args()
    result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "chunk_bytes": args.chunk_bytes, "reader": {}}
    with tempfile.TemporaryDirectory(prefix="bench_pre_") as tmp:
        folder = Path(tmp)
        inputs = make_inputs(folder, args.rows)
        for name, path in inputs.items():
            r = bench_reader(path, args.chunk_bytes, args.repeats)
            result["reader"][name] = r
            print(f"reader {name:7s}: {r['rows']} rows, {r['rows_per_s_per_core'] / 1e3:.0f}k rows/s, "
                  f"{r['mb_per_s_per_core']} MB/s of text per core (cpu {r['cpu_s']} s, wall {r['wall_s']} s)")
        result["reader_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        pre_dir = folder / "pre"
        pre_dir.mkdir()
        p = bench_preprocess(inputs["padded"], pre_dir, args.days, args.workers)
        result["preprocess"] = p
        print(f"preprocess: {p['days']} days x {args.rows} rows, {p['workers']} workers: {p['wall_s']} s wall, "
              f"{p['rows_per_s'] / 1e3:.0f}k rows/s; {p['cpu_s']} s CPU, {p['rows_per_s_per_core'] / 1e3:.0f}k rows/s "
              f"and {p['mb_per_s_per_core']} MB/s per core ({p['note']})")
        result["peak_rss_mb_including_children"] = round(
            max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)
    out = args.output or paths.scratch_path() / "bench" / "preprocess.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
