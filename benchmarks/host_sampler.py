"""Sample a running process's threads and the machine's memory counters every few milliseconds, for lining host
events up with a Server run's slow stretches (its result.json `t0_monotonic_s` is on the same clock).

    python3 benchmarks/host_sampler.py --pid PID --out samples.npz [--period-ms 20]
    python3 benchmarks/host_sampler.py --show samples.npz --result RUN/result.json [--spikes 12]

Sampling stops when the process exits or turns zombie (or after --max-seconds). The .npz holds
- `t`: float64 [samples], CLOCK_MONOTONIC seconds;
- `vmstat`: int64 [samples, len(VMSTAT)], the /proc/vmstat counters VMSTAT names (NUMA hinting faults and page
  migrations, faults, THP collapses, compaction);
- `cpu`: int64 [samples, cpus, 3], per CPU user+nice, system+irq+softirq, steal ticks from /proc/stat;
- `threads`: int64 [samples, tids, 3], per thread of the process minor faults, user ticks, kernel ticks (-1 once
  the thread is gone), with `tids` int64 [tids] and `names` [tids] (the kernel's comm: Python threads show as
  `python3`; result.json's host_cpu.threads gives their Python names by tid).
--show prints, per counter, the rate per second, and the sample windows where counters jumped (`--spikes`), their
time since the run's t0 when --result is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from dlrm_bench.harness.host_stats import read_vmstat
from dlrm_bench.harness.thread_times import parse_task_stat

VMSTAT = ("numa_hint_faults", "numa_hint_faults_local", "numa_pte_updates", "numa_pages_migrated",
          "pgmigrate_success", "pgfault", "thp_collapse_alloc", "thp_split_pmd", "compact_stall",
          "pgscan_kswapd", "nr_tlb_remote_flush", "nr_tlb_remote_flush_received")


def read_cpus() -> list[list[int]]:
    rows = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            f = [int(v) for v in line.split()[1:9]]
            rows.append([f[0] + f[1], f[2] + f[5] + f[6], f[7]])
    return rows


def exited(pid: int) -> bool:
    """Whether the process is gone or a zombie (ended, not yet reaped by its parent)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return True
    return text[text.rindex(")") + 2:text.rindex(")") + 3] in ("Z", "X")


def read_threads(pid: int) -> dict[int, tuple[str, int, int, int]]:
    """tid -> (name, minor faults, user ticks, kernel ticks) of each thread of `pid`."""
    out = {}
    for entry in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(entry.name)] = parse_task_stat((entry / "stat").read_text(errors="replace"))
        except (OSError, ValueError, IndexError):
            continue  # the thread ended
    return out


def sample(pid: int, period_s: float, max_seconds: float) -> dict[str, np.ndarray]:
    times, vm, cpus, per_thread = [], [], [], []
    names: dict[int, str] = {}
    end = time.monotonic() + max_seconds
    next_at = time.monotonic()
    while time.monotonic() < end and not exited(pid):
        try:
            threads = read_threads(pid)
        except OSError:
            break  # the process ended
        times.append(time.monotonic())
        counters = read_vmstat(fields=VMSTAT)
        vm.append([counters.get(k, 0) for k in VMSTAT])
        cpus.append(read_cpus())
        per_thread.append({tid: v[1:] for tid, v in threads.items()})
        names.update({tid: v[0] for tid, v in threads.items()})
        next_at += period_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    tids = sorted(names)
    table = np.full((len(times), len(tids), 3), -1, dtype=np.int64)
    for k, row in enumerate(per_thread):
        for j, tid in enumerate(tids):
            if tid in row:
                table[k, j] = row[tid]
    return {"t": np.array(times), "vmstat": np.array(vm, dtype=np.int64).reshape(len(times), len(VMSTAT)),
            "cpu": np.array(cpus, dtype=np.int64), "threads": table, "tids": np.array(tids, dtype=np.int64),
            "names": np.array([names[t] for t in tids])}


def show(path: Path, result: Path | None, spikes: int) -> None:
    data = np.load(path)
    t = data["t"]
    if len(t) < 2:
        print(f"{path}: fewer than 2 samples")
        return
    t0 = json.loads(result.read_text())["t0_monotonic_s"] if result else t[0]
    span = t[-1] - t[0]
    vm = data["vmstat"]
    print(f"{path}: {len(t)} samples over {span:.1f} s (times below: seconds since "
          f"{'the run t0' if result else 'the first sample'})")
    for j, name in enumerate(VMSTAT):
        total = vm[-1, j] - vm[0, j]
        if total:
            print(f"  {name:30s} {total / span:12,.0f}/s")
    step = np.diff(vm, axis=0)
    for j, name in enumerate(VMSTAT):
        if step[:, j].max() <= 0:
            continue
        top = np.argsort(step[:, j])[::-1][:spikes]
        print(f"  {name} biggest windows: " + ", ".join(f"{t[k + 1] - t0:.2f}s +{step[k, j]}" for k in sorted(top)))
    threads = data["threads"]
    live = (threads[1:, :, 2] >= 0) & (threads[:-1, :, 2] >= 0)
    kernel = np.where(live, threads[1:, :, 2] - threads[:-1, :, 2], 0).sum(axis=1)
    faults = np.where(live, threads[1:, :, 0] - threads[:-1, :, 0], 0).sum(axis=1)
    for label, series in (("process kernel ticks", kernel), ("process minor faults", faults)):
        top = np.argsort(series)[::-1][:spikes]
        print(f"  {label} biggest windows: " + ", ".join(f"{t[k + 1] - t0:.2f}s +{series[k]}" for k in sorted(top)))
    steal = np.diff(data["cpu"][:, :, 2], axis=0).sum(axis=1)
    if steal.max() > 0:
        top = np.argsort(steal)[::-1][:spikes]
        print("  steal ticks biggest windows: " + ", ".join(f"{t[k + 1] - t0:.2f}s +{steal[k]}" for k in sorted(top)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pid", type=int)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--period-ms", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--show", type=Path, help="print a sample file instead of sampling")
    parser.add_argument("--result", type=Path, help="with --show: the run's result.json (its t0)")
    parser.add_argument("--spikes", type=int, default=12)
    args = parser.parse_args()
    if args.show:
        if not args.show.is_file():
            print(f"{args.show}: no such sample file", file=sys.stderr)
            return 2
        show(args.show, args.result, args.spikes)
        return 0
    if args.pid is None or args.out is None:
        parser.error("--pid and --out are needed to sample (or --show FILE)")
    if not Path(f"/proc/{args.pid}").exists():
        print(f"process {args.pid} is not running", file=sys.stderr)
        return 2
    data = sample(args.pid, args.period_ms / 1e3, args.max_seconds)
    tmp = args.out.with_name(args.out.name + ".tmp.npz")
    np.savez_compressed(tmp, **data)
    tmp.rename(args.out)
    print(f"{args.out}: {len(data['t'])} samples of {len(data['tids'])} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
