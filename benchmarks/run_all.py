#!/usr/bin/env python3
"""`make bench`: run the benchmarks that fit this machine, one after another, and list what each wrote.

CPU only: raw-day parsing and preprocessing (bench_preprocess.py), the int8 cpu engine against the FP32 reference
(bench_cpu.py), and the harness's own ceiling (bench_harness.py). With a CUDA GPU also: the kernels against their
roofline (bench_cuda.py) and the hot/cold table sweep (bench_hot_cold.py). Each benchmark prints its own table and
writes its own JSON; this script writes build/bench/run_all.json with every command, exit status and duration.

    python3 benchmarks/run_all.py [--only cpu,harness] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = REPO / "build" / "bench"


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def plan(quick: bool, gpu: bool) -> dict[str, list[str]]:
    """Benchmark name -> its command line (arguments after the script)."""
    commands = {
        "preprocess": ["bench_preprocess.py", "--output", str(OUT / "preprocess.json")]
        + (["--rows", "100000", "--repeats", "1"] if quick else []),
        "cpu": ["bench_cpu.py", "--out", str(OUT / "bench_cpu.json")] + (["--repeats", "2"] if quick else []),
        "harness": ["bench_harness.py", "--out", str(OUT)]
        + (["--duration", "3", "--server-qps", "20000"] if quick else []),
    }
    if gpu:
        commands["cuda"] = ["bench_cuda.py", "--system", "--out", str(OUT)] + (["--batches", "262144"] if quick else [])
        commands["hot_cold"] = ["bench_hot_cold.py", "--out", str(OUT)]
    return commands


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated subset of: preprocess,cpu,harness,cuda,hot_cold")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and shorter runs")
    args = ap.parse_args()
    commands = plan(args.quick, cuda_available())
    wanted = [w.strip() for w in args.only.split(",") if w.strip()] or list(commands)
    unknown = [w for w in wanted if w not in commands]
    if unknown:
        print(f"run_all: unknown or unavailable benchmark(s) {', '.join(unknown)}; "
              f"here: {', '.join(commands)}", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for name in wanted:
        command = [sys.executable, str(HERE / commands[name][0]), *commands[name][1:]]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        status = subprocess.run(command, cwd=REPO).returncode
        results.append({"benchmark": name, "command": command[1:], "exit_status": status,
                        "seconds": round(time.perf_counter() - start, 1)})
    summary = OUT / "run_all.json"
    tmp = summary.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"runs": results}, indent=2) + "\n")
    tmp.replace(summary)
    print(f"\n{'benchmark':<12}{'status':>7}{'seconds':>9}")
    for r in results:
        print(f"{r['benchmark']:<12}{r['exit_status']:>7}{r['seconds']:>9.1f}")
    print(f"wrote {summary}")
    return 0 if all(r["exit_status"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
