"""One line per LoadGen run under a logs folder: scenario, result, p99, the host stalls, the main settings.

    python3 benchmarks/summarize_results.py [build/logs] [--json out.json]

Reads every result.json that `dlrm-bench run` wrote (newest runs last) and prints: samples/s, VALID/INVALID, p99
(Server) or the first result's latency (Offline), the interpreter watchdog's stalls (count, longest), the machine's
memory stalls where there were any (direct compactions and reclaims, this process's major page faults) and the
settings that differ most between runs (target QPS, batch sizes, CUDA graphs, bundles).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SETTINGS_SHOWN = ("server_target_qps", "offline_expected_qps", "gpu_batch_size", "cuda_graphs", "gpu_num_bundles",
                  "inflight_batches", "offline_take_samples", "gpus", "top_gemm_first_layer")
"""The settings printed beside each result (when present in the run's settings)."""


def summarize(result_file: Path) -> dict:
    """The quoted fields of one result.json; targets as LoadGen ran them, cuda_graphs and gpus as the engine
    reported them."""
    r = json.loads(result_file.read_text())
    if not isinstance(r, dict):
        raise ValueError("not a JSON object")
    pauses = r.get("interpreter_pauses") or {}
    settings = dict(r.get("settings") or {})
    loadgen = r.get("loadgen_settings") if isinstance(r.get("loadgen_settings"), dict) else {}
    key = {"Server": "server_target_qps", "Offline": "offline_expected_qps"}.get(r.get("scenario"))
    if key in loadgen:  # what LoadGen ran with (a command-line target overrides the config's)
        settings[key] = loadgen[key]
    host = r.get("host_cpu") if isinstance(r.get("host_cpu"), dict) else {}
    vmstat = host.get("vmstat") if isinstance(host.get("vmstat"), dict) else {}
    memory = {"compactions": vmstat.get("compact_stall"), "reclaims": vmstat.get("allocstall"),
              "major faults": host.get("major_faults")}
    engine = r.get("engine_info") or {}
    for k in ("cuda_graphs", "gpus"):
        if k in engine:
            settings[k] = engine[k]
    return {"run": str(result_file.parent), "scenario": r.get("scenario"), "config_ver": r.get("config_ver"),
            "test_mode": r.get("test_mode"), "samples_per_second": r.get("samples_per_second"),
            "validity": r.get("result_validity"), "p99_ms": r.get("latency_p99_ms"),
            "auc_ratio": r.get("auc_ratio"), "first_result_ms": r.get("latency_min_ms"), "stalls": pauses.get("stalls"),
            "stall_max_ms": pauses.get("stall_max_ms"),
            "memory_stalls": {k: int(v) for k, v in memory.items() if v},
            "settings": {k: settings[k] for k in SETTINGS_SHOWN if k in settings}}


def line(s: dict) -> str:
    sps = f"{s['samples_per_second']:,.0f}/s" if s["samples_per_second"] is not None else "-"
    p99 = f"p99 {s['p99_ms']:.2f} ms" if s["p99_ms"] is not None and s["scenario"] != "Offline" else ""
    auc = f"AUC ratio {100 * s['auc_ratio']:.3f}%" if s["auc_ratio"] is not None else ""
    first = (f"first result {s['first_result_ms']:.0f} ms" if s.get("first_result_ms") is not None
             and s["scenario"] == "Offline" else "")
    stalls = f"stalls {s['stalls']} (max {s['stall_max_ms']:.1f} ms)" if s["stalls"] is not None else ""
    memory = ", ".join(f"{k} {v}" for k, v in s.get("memory_stalls", {}).items())
    memory = f"memory: {memory}" if memory else ""
    cfg = " ".join(f"{k}={v}" for k, v in s["settings"].items())
    return "  ".join(x for x in (f"{s['scenario']}/{s['config_ver']}/{s['test_mode']}", sps, s["validity"] or "",
                                 p99, auc, first, stalls, memory, cfg) if x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("logs", type=Path, nargs="?", default=Path("build/logs"))
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    if not args.logs.is_dir():
        print(f"summarize_results.py: error: {args.logs} is not a folder", file=sys.stderr)
        return 2
    files = sorted(args.logs.rglob("result.json"), key=lambda f: (f.stat().st_mtime, str(f)))
    rows = []
    for f in files:
        try:
            rows.append(summarize(f))
        except (OSError, ValueError) as e:
            print(f"{f}: unreadable ({e})", file=sys.stderr)
    for s in rows:
        print(line(s))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
