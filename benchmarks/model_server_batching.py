"""A model, not a measurement: the Server batcher in front of an engine of fixed capacity, to compare take policies.

    python3 benchmarks/model_server_batching.py [--qps 736000] [--capacity 747000] [--batch 524288] [--out DIR]

Samples arrive as a Poisson process (`--qps`), each with a gamma-distributed pair count of mean 270 (MLPerf's
trace has ~270.3). The batcher works like harness/sut.py: it waits for one of `--slots` engine slots, then takes
queued samples until `--batch` pairs are queued or the head sample has waited `--wait-ms`; the take is cut at
`--batch` pairs. The engine runs one batch at a time, padded to the next of `--buckets` evenly spaced sizes (the
CUDA engine's graph buckets), at a speed that does `--capacity` samples/s on full batches. A batch's samples
complete `--hand-back-ms` after the engine finishes it. `--stalls` host pauses of `--stall-ms` each, at random
times, stop the batcher.

The two head-of-queue rules it compares: `own` (a sample's wait counts from its own arrival; the bridge since
session 16) and `stale` (the wait counts from the arrival that last found the queue empty, so a sample left
behind by a take was due at once: the bridge before). Prints one line per case and writes
model_server_batching.json: p50 / p99 latency, the share of computed pairs that were padding, batches.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dlrm_bench.atomic import save_json
from dlrm_bench.engines.cuda.engine import graph_bucket_sizes

MEAN_PAIRS = 270.0
DISPATCH_S = 0.3e-3
FIXED_BATCH_S = 40e-6
"""Per-batch cost on the engine beside its pairs (kernel starts, last waves): a guess, small against 2.6 ms."""
WARMUP_S = 2.0


def simulate(policy: str, qps: float, capacity: float, batch: int, slots: int, wait_s: float, seconds: float,
             buckets: int, hand_back_s: float, stalls: int, stall_s: float, seed: int) -> dict[str, float]:
    """Latencies (ms) of the samples that arrived after WARMUP_S, the padding share and the batch count."""
    rng = np.random.default_rng(seed)
    n = int(qps * seconds)
    arrival = np.cumsum(rng.exponential(1.0 / qps, n))
    pairs = np.maximum(1, rng.gamma(1.2, MEAN_PAIRS / 1.2, n)).astype(np.int64)
    cum = np.concatenate(([0], np.cumsum(pairs)))
    pair_rate = batch / (batch / (capacity * MEAN_PAIRS) - FIXED_BATCH_S)
    sizes = np.array(graph_bucket_sizes(batch, buckets))
    stall_at = np.sort(rng.uniform(0.0, seconds, stalls))
    latency = np.empty(n)
    slot_free = [0.0] * slots
    head = empty_at = batches = 0
    now = engine_free = 0.0
    padded = computed = 0
    while head < n:
        now = max(now, slot_free[batches % slots])
        for start in stall_at[(stall_at <= now) & (now < stall_at + stall_s)]:
            now = start + stall_s
        now = max(now, arrival[head])
        first = arrival[head] if policy == "own" or head == empty_at else arrival[empty_at]
        full_at = int(np.searchsorted(cum, cum[head] + batch))  # the sample that brings `batch` pairs
        fills = arrival[full_at - 1] if full_at - 1 < n else np.inf
        taken_at = max(now, min(fills, first + wait_s))
        arrived = int(np.searchsorted(arrival, taken_at, side="right"))
        limit = int(np.searchsorted(cum, cum[head] + batch, side="right")) - 1
        end = max(head + 1, min(arrived, limit))
        got = int(cum[end] - cum[head])
        size = int(sizes[np.searchsorted(sizes, got)])
        padded += size - got
        computed += size
        engine_free = max(taken_at + DISPATCH_S, engine_free) + FIXED_BATCH_S + size / pair_rate
        done = engine_free + hand_back_s
        latency[head:end] = done - arrival[head:end]
        slot_free[batches % slots] = done
        batches += 1
        if end >= arrived:
            empty_at = end
        head, now = end, taken_at
    kept = latency[arrival > WARMUP_S] * 1e3
    return {"p50_ms": float(np.percentile(kept, 50)), "p99_ms": float(np.percentile(kept, 99)),
            "padding_share": padded / computed, "batches": float(batches)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--qps", type=float, nargs="+", default=[736000.0])
    p.add_argument("--capacity", type=float, default=747000.0, help="samples/s on full batches")
    p.add_argument("--batch", type=int, default=524288)
    p.add_argument("--wait-ms", type=float, nargs="+", default=[5.0])
    p.add_argument("--slots", type=int, default=3)
    p.add_argument("--buckets", type=int, default=16)
    p.add_argument("--hand-back-ms", type=float, default=0.8)
    p.add_argument("--stalls", type=int, default=8, help="host pauses per run")
    p.add_argument("--stall-ms", type=float, default=8.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args(argv)
    rows = []
    for qps in args.qps:
        for wait_ms in args.wait_ms:
            for policy in ("stale", "own"):
                row = {"policy": policy, "qps": qps, "wait_ms": wait_ms, "capacity": args.capacity,
                       "batch": args.batch, **simulate(policy, qps, args.capacity, args.batch, args.slots,
                                                       wait_ms / 1e3, args.seconds, args.buckets,
                                                       args.hand_back_ms / 1e3, args.stalls, args.stall_ms / 1e3,
                                                       args.seed)}
                rows.append(row)
                print(f"qps {qps:,.0f}  wait {wait_ms:g} ms  {policy:5s}  p50 {row['p50_ms']:.1f} ms  "
                      f"p99 {row['p99_ms']:.1f} ms  padding {100 * row['padding_share']:.2f}%  "
                      f"batches {row['batches']:,.0f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_json(args.out / "model_server_batching.json", {"args": {k: str(v) for k, v in vars(args).items()},
                                                         "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
