#!/usr/bin/env bash
# Multi-GPU scaling through LoadGen on the criteo-tb-random preset (run from the repository root on a machine
# with several GPUs). For each GPU count in $GPU_COUNTS (default "1 2 4"): an Offline run, then a Server run at
# SERVER_FRACTION (default 0.7) of the Offline samples/s just measured; or, with SERVER_PER_GPU_QPS set, both
# scenarios in one run (one engine load) with the Server target at GPUs x SERVER_PER_GPU_QPS.
# Writes multi_gpu.json and logs under $OUT.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
GPU_COUNTS="${GPU_COUNTS:-1 2 4}"
MIN_DURATION="${MIN_DURATION:-30}"
SERVER_FRACTION="${SERVER_FRACTION:-0.7}"
PER_GPU_QPS="${PER_GPU_QPS:-420000}"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
[ -f "$MLPERF_SCRATCH_PATH/preprocessed_data/criteo/criteo-tb-random/meta.json" ] || \
  python3 -m dlrm_bench.cli make-random-preset 2>&1 | grep -v "/s\]" | tail -3
newest() { python3 - "$1" <<'PY'
import glob, json, os, sys
root = os.path.join(os.environ["MLPERF_SCRATCH_PATH"], "logs", "latest")
paths = glob.glob(os.path.join(root, "*", "dlrm", sys.argv[1], "*", "PerformanceOnly", "result.json"))
print(json.dumps(json.load(open(paths[0]))) if paths else "{}")
PY
}
echo "[]" > "$OUT/multi_gpu.json"
for n in $GPU_COUNTS; do
  devices=$(seq -s, 0 $((n - 1)))
  extra=""; [ "$n" -gt 1 ] && extra="${MULTI_ARGS:-}"  # e.g. --set batch_size=524288 --set gpu_batch_size=524288
  qps=$((n * PER_GPU_QPS))
  if [ -n "${SERVER_PER_GPU_QPS:-}" ]; then  # both scenarios in one run (one engine load), fixed Server target
    CUDA_VISIBLE_DEVICES=$devices python3 -m dlrm_bench.cli run --dataset criteo-tb-random --engine cuda \
      --scenarios Offline,Server --test_mode PerformanceOnly --min_duration "$MIN_DURATION" \
      --offline_expected_qps "$qps" --server_target_qps $((n * SERVER_PER_GPU_QPS)) $extra 2>&1 | grep -v "/s\]" | tail -5
    offline=$(newest Offline)
  else
    CUDA_VISIBLE_DEVICES=$devices python3 -m dlrm_bench.cli run --dataset criteo-tb-random --engine cuda \
      --scenarios Offline --test_mode PerformanceOnly --min_duration "$MIN_DURATION" --offline_expected_qps "$qps" \
      $extra 2>&1 | grep -v "/s\]" | tail -4
    offline=$(newest Offline)
    sps=$(python3 -c "import json,sys; print(json.loads(sys.argv[1]).get('samples_per_second') or 0)" "$offline")
    target=$(python3 -c "print(int(float('$sps') * $SERVER_FRACTION) or 1000)")
    CUDA_VISIBLE_DEVICES=$devices python3 -m dlrm_bench.cli run --dataset criteo-tb-random --engine cuda \
      --scenarios Server --test_mode PerformanceOnly --min_duration "$MIN_DURATION" --server_target_qps "$target" \
      $extra 2>&1 | grep -v "/s\]" | tail -4
  fi
  server=$(newest Server)
  python3 - "$OUT/multi_gpu.json" "$n" "$offline" "$server" <<'PY'
import json, sys
path, n, off, srv = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
keep = ("samples_per_second", "pairs_per_second", "result_validity", "latency_p99_ms", "device", "loadgen_settings")
rows = json.load(open(path))
rows.append({"gpus": n, "offline": {k: off.get(k) for k in keep}, "server": {k: srv.get(k) for k in keep}})
json.dump(rows, open(path, "w"), indent=2)
PY
  tar -czf "$OUT/logs-${n}gpu.tgz" -C "$MLPERF_SCRATCH_PATH/logs" "$(readlink "$MLPERF_SCRATCH_PATH/logs/latest")" 2>/dev/null
done
python3 - "$OUT/multi_gpu.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
base = {k: (rows[0][k].get("samples_per_second") or 0) for k in ("offline", "server")} if rows else {}
print(f"{'GPUs':>4} {'Offline samples/s':>18} {'x':>5} {'Server samples/s':>17} {'x':>5} {'p99 ms':>7} {'valid':>8}")
for r in rows:
    o, s = r["offline"].get("samples_per_second") or 0, r["server"].get("samples_per_second") or 0
    print(f"{r['gpus']:>4} {o:18,.0f} {o / max(base['offline'], 1):5.2f} {s:17,.0f} {s / max(base['server'], 1):5.2f} "
          f"{r['server'].get('latency_p99_ms') or 0:7.1f} {str(r['server'].get('result_validity')):>8}")
PY
