"""Where a Triton request's time goes, per response size, with the predictions in the gRPC message or in shared
memory (setting triton_output_shm): one request in flight, `triton_trace` phases (triton_server/trace.py).

    .venv/bin/python benchmarks/bench_triton_server_responses.py                    # synthetic-tiny, cpu engine
    .venv/bin/python benchmarks/bench_triton_server_responses.py --engine cuda --dataset-dir D --model M --samples 4,1000,970

Prints a table and writes build/bench/bench_triton_server_responses.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_triton_server import build_engines, make_context  # noqa: E402
from dlrm_bench.paths import scratch_path  # noqa: E402
from dlrm_bench.settings import Settings  # noqa: E402
from dlrm_bench.triton_server.trace import summarize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset-dir", type=Path,
                   default=scratch_path() / "preprocessed_data" / "criteo" / "synthetic-tiny")
    p.add_argument("--model", type=Path, default=scratch_path() / "models" / "dlrm" / "synthetic-tiny")
    p.add_argument("--engine", default="cpu")
    p.add_argument("--samples", default="2,180,734", help="samples per request (comma-separated sizes)")
    p.add_argument("--requests", type=int, default=6, help="requests per size and setting")
    p.add_argument("--batch-size", type=int, default=262144)
    p.add_argument("--out", type=Path, default=scratch_path() / "bench" / "bench_triton_server_responses.json")
    args = p.parse_args(argv)
    ctx = make_context(args.dataset_dir, args.model, scratch_path() / "bench" / "triton_responses_logs")
    starts, ends = np.asarray(ctx.offsets[:-1], np.int64), np.asarray(ctx.offsets[1:], np.int64)
    rows = []
    for shm in (False, True):
        workdir = scratch_path() / "bench" / f"triton_responses_shm_{shm}"
        shutil.rmtree(workdir, ignore_errors=True)
        settings = Settings(batch_size=args.batch_size, inflight_batches=1, triton_trace=True, triton_output_shm=shm)
        engine = build_engines(["triton-ranges"], args.engine, ctx, settings, workdir)["triton-ranges"]
        try:
            for k in (min(int(x), len(starts)) for x in args.samples.split(",")):
                began = time.perf_counter()
                for _ in range(args.requests):
                    engine.predict_ranges_async(starts[:k], ends[:k]).result()
                phases = summarize(engine.trace_dir, began, time.perf_counter())
                rows.append({"output_shm": shm, "samples": k, "pairs": int((ends[:k] - starts[:k]).sum()),
                             "phases": phases})
        finally:
            engine.close()
    print(f"{'pairs':>8}  {'predictions in':<14}{'to_model':>10}{'engine':>10}{'respond':>10}{'to_client':>11}"
          f"{'total':>10}   (median ms)")
    for row in sorted(rows, key=lambda r: (r["pairs"], r["output_shm"])):
        ph = row["phases"]
        print(f"{row['pairs']:>8}  {'shared memory' if row['output_shm'] else 'gRPC message':<14}"
              + "".join(f"{ph[name]['median_ms']:>10.2f}" for name in ("to_model", "engine", "respond"))
              + f"{ph['to_client']['median_ms']:>11.2f}{ph['total']['median_ms']:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"engine": args.engine, "dataset_dir": str(args.dataset_dir), "rows": rows},
                                   indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    from bench_inputs import run_main  # noqa: E402

    sys.exit(run_main(main))
