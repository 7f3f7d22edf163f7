#!/usr/bin/env bash
# Measurements of the CUDA engine on a GPU host, step by step (docs/gpu.md). From the repository root, after
# `make setup`:
#   STEPS=preset,tests,bench,offline,server bash benchmarks/gpu_run.sh
#   MIN_DURATION=60 SERVER_QPS_SWEEP="430000 455000" STEPS=preset bash benchmarks/gpu_run.sh
#   STEPS=preset,aboffline AB_SETS="shipped;--set gpu_batch_size=524288;shipped" bash benchmarks/gpu_run.sh
#   STEPS=preset,multigpu GPU_COUNTS="1 2 4" bash benchmarks/gpu_run.sh
#
# Steps (STEPS, a comma list, run in this order; default preset,offline,server):
#   preset    dlrm-bench make-random-preset: the full-size criteo-tb-random dataset (89,137,319 test pairs) and a
#             random 24 GB int8 model under $MLPERF_SCRATCH_PATH (complete files are kept; PRESET_AGAIN=1 remakes them)
#   tests     pytest on the GPU tests: the tests marked gpu and the CUDA / kernel test files (TESTS: pytest's
#             arguments instead)
#   bench     benchmarks/bench_cuda.py: the kernels per batch size against the roofline (BENCH_ARGS: its flags,
#             default --system: this machine's config)
#   hotcold   benchmarks/bench_hot_cold.py: embedding_weights_on_gpu_part sweep, host-staged inputs (HOTCOLD_ARGS)
#   harness   benchmarks/bench_harness.py: LoadGen and the SUT with an instant engine, the harness's own ceiling
#             (HARNESS_ARGS, default "--duration 8 --server-qps 300000,600000")
#   accuracy  the synthetic-tiny model (built here when missing) through the cuda engine, AccuracyOnly with
#             config_ver default and high_accuracy (AUC against the FP32 reference engine)
#   aboffline one Offline run per ";"-separated entry of AB_SETS, each that run's extra flags or "shipped" (the
#             config as it is), e.g. AB_SETS="shipped;--set cuda_graphs=false;shipped"; the list AB_ROUNDS times
#             (default 1), so the entries interleave
#   abserver  the same for Server, at AB_SERVER_QPS (default: the config's target), e.g. 10 rounds of
#             AB_SETS="shipped;--set server_backlog_batch_size=1048576 ..." AB_ROUNDS=10:
#             every run, VALID or not, with its p99 in results.txt
#   triton    benchmarks/bench_triton_server.py on criteo-tb-random: in-process against Triton Inference Server,
#             Offline and Server at TRITON_QPS (default 300000; a comma list sweeps); TRITON_ARGS adds flags.
#             Needs the tritonserver binary (nvidia-pytriton)
#   network   benchmarks/bench_network.py: in-process against one local `dlrm-bench serve` node through LoadGen's
#             QDL, Offline and Server, medians and ratios (NETWORK_ARGS, default "--server-qps 1000,2000")
#   findpeak  dlrm-bench find-peak --scenario Server on the preset, FINDPEAK_DURATION s steps (default 30;
#             FINDPEAK_ARGS adds flags); the user settings file it writes is copied to $OUT
#   offline, server
#             LoadGen PerformanceOnly runs of `dlrm-bench run --dataset criteo-tb-random --engine cuda`, both in one
#             process (one engine load), MIN_DURATION seconds each
#   multigpu  one Offline run per GPU count in GPU_COUNTS (default "1 2 4"; counts above the GPUs present are
#             skipped), CUDA_VISIBLE_DEVICES=0..N-1; MULTI_ARGS adds flags to the runs with more than one GPU
# Independent of STEPS: SERVER_QPS_SWEEP="a b ..." adds one Server run per target (after the steps above).
# Every LoadGen run takes RUN_ARGS as extra flags (e.g. "--set gc_during_test=off").
#
# Variables: OUT (results, default build/gpu-out), MIN_DURATION (seconds per LoadGen run, default 60),
# MLPERF_SCRATCH_PATH (default $PWD/build). Results: $OUT/gpu_run.log (the end of each step's output), the JSON of
# the benchmarks, results.txt (`dlrm-bench report` over this script's LoadGen runs) and logs.tgz (their run folders,
# without LoadGen's accuracy and trace logs).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

# NVLink multicast stays off: on a shared multi-GPU host a program that uses it can take the GPUs out of service.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONUNBUFFERED=1
export MLPERF_SCRATCH_PATH="${MLPERF_SCRATCH_PATH:-$PWD/build}"
export OUT="${OUT:-$PWD/build/gpu-out}"
STEPS="${STEPS-preset,offline,server}"
MIN_DURATION="${MIN_DURATION:-60}"
read -r -a RUN_FLAGS <<< "${RUN_ARGS:-}"
mkdir -p "$OUT"
LOG="$OUT/gpu_run.log"
LOGS="$MLPERF_SCRATCH_PATH/logs"

if [ -x .venv/bin/python ]; then
  PY=(.venv/bin/python)
  DLRM=(.venv/bin/dlrm-bench)
else  # no `make setup` here: the system Python with the sources on its path
  PY=(python3)
  DLRM=(python3 -m dlrm_bench.cli)
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi

has() { [[ ",$STEPS," == *",$1,"* ]]; }
preset_dir="$MLPERF_SCRATCH_PATH/preprocessed_data/criteo/criteo-tb-random"
preset_model_dir="$MLPERF_SCRATCH_PATH/models/dlrm/criteo-tb-random"
log() { tee -a "$LOG"; }
quiet() { grep --line-buffered -v '/s\]'; }  # without tqdm's progress lines
step() { echo "=== $* ($(date -u +%FT%TZ))" | log; }
run_marker="$OUT/.start"
touch "$run_marker"
loadgen() {  # loadgen SCENARIOS [flags]: one `dlrm-bench run` of the cuda engine on the preset
  local scenarios=$1; shift
  "${DLRM[@]}" run --dataset criteo-tb-random --engine cuda --scenarios "$scenarios" --test_mode PerformanceOnly \
    --min_duration "$MIN_DURATION" "$@" "${RUN_FLAGS[@]}" 2>&1 | quiet | tail -"${TAIL:-6}" | log
}

{
  echo "gpu_run.sh: $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (modified)'), STEPS=$STEPS"
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader
  "${PY[@]}" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "CUDA",
torch.version.cuda, "GPUs visible:", torch.cuda.device_count())'
  [ -f build/kernels/libdlrm_kernels.so ] && echo "native kernel library: build/kernels/libdlrm_kernels.so" \
    || echo "native kernel library: not built (make kernels): the OpenAI Triton kernels run"
} 2>&1 | log

if has preset; then
  step preset
  start=$(date +%s)
  "${DLRM[@]}" make-random-preset ${PRESET_AGAIN:+--force} 2>&1 | quiet | tail -5 | log
  echo "preset: $(( $(date +%s) - start )) s" | log
fi

if has tests; then
  step tests
  if [ -n "${TESTS:-}" ]; then read -r -a test_args <<< "$TESTS"; else test_args=(tests -k "cuda or kernel or gpu"); fi
  timeout 900 "${PY[@]}" -m pytest -q -p no:cacheprovider "${test_args[@]}" 2>&1 | tail -15 | log
fi

if has bench; then
  step bench
  read -r -a bench_args <<< "${BENCH_ARGS:---system}"
  timeout 600 "${PY[@]}" benchmarks/bench_cuda.py "${bench_args[@]}" --out "$OUT" 2>&1 | quiet | tail -25 | log
fi

if has hotcold; then
  step hotcold
  read -r -a hotcold_args <<< "${HOTCOLD_ARGS:-}"
  timeout 600 "${PY[@]}" benchmarks/bench_hot_cold.py "${hotcold_args[@]}" --out "$OUT" 2>&1 | quiet | tail -30 | log
fi

if has harness; then
  step harness
  read -r -a harness_args <<< "${HARNESS_ARGS:---duration 8 --server-qps 300000,600000}"
  timeout 600 "${PY[@]}" benchmarks/bench_harness.py "${harness_args[@]}" --out "$OUT" 2>&1 | tail -10 | log
fi

if has accuracy; then
  step accuracy
  "${DLRM[@]}" run --dataset synthetic-tiny --engine cuda --scenarios Offline --config_ver default,high_accuracy \
    --test_mode AccuracyOnly 2>&1 | quiet | tail -8 | log
fi

ab_runs() {  # ab_runs SCENARIO [flags]: AB_ROUNDS rounds of one run per entry of AB_SETS, each with the flags
  local scenario=$1; shift
  local entries entry round flags
  IFS=';' read -r -a entries <<< "${AB_SETS:-shipped}"
  for round in $(seq 1 "${AB_ROUNDS:-1}"); do
    for entry in "${entries[@]}"; do
      read -r -a flags <<< "$entry"
      [ "${flags[*]}" = shipped ] && flags=()
      echo "$scenario round $round: ${flags[*]:-(shipped config)}" | log
      TAIL=3 loadgen "$scenario" "$@" "${flags[@]}"
    done
  done
}

if has aboffline; then
  step "aboffline: ${AB_SETS:-shipped}, ${AB_ROUNDS:-1} round(s)"
  ab_runs Offline
fi

if has abserver; then
  step "abserver: ${AB_SETS:-shipped}, ${AB_ROUNDS:-1} round(s)${AB_SERVER_QPS:+ at $AB_SERVER_QPS}"
  ab_runs Server ${AB_SERVER_QPS:+--server_target_qps "$AB_SERVER_QPS"}
fi

if has triton; then
  step triton
  read -r -a triton_args <<< "${TRITON_ARGS:-}"
  timeout 1200 "${PY[@]}" benchmarks/bench_triton_server.py --engine cuda --dataset-dir "$preset_dir" \
    --model "$preset_model_dir" --variants in-process,triton-ranges --repeats 1 --offline-duration 15 \
    --server-duration 25 --server-qps "${TRITON_QPS:-300000}" "${triton_args[@]}" \
    --out "$OUT/bench_triton_server.json" 2>&1 | quiet | tee "$OUT/triton.log" | tail -40 | log
fi

if has network; then
  step network
  read -r -a network_args <<< "${NETWORK_ARGS:---server-qps 1000,2000}"
  timeout 1800 "${PY[@]}" benchmarks/bench_network.py --engine cuda --dataset-dir "$preset_dir" \
    --model "$preset_model_dir" --repeats 3 --offline-duration 15 --server-duration 20 "${network_args[@]}" \
    --out "$OUT/bench_network.json" 2>&1 | quiet | tail -30 | log
fi

if has findpeak; then
  step "findpeak: Server, ${FINDPEAK_DURATION:-30} s steps"
  "${DLRM[@]}" find-peak --dataset criteo-tb-random --engine cuda --scenario Server \
    --min_duration "${FINDPEAK_DURATION:-30}" ${FINDPEAK_ARGS:-} 2>&1 | grep --line-buffered "find-peak" | log
  cp "$MLPERF_SCRATCH_PATH"/user_settings/*.json "$OUT/" 2>/dev/null
fi

scenarios=""
has offline && scenarios="Offline"
has server && scenarios="${scenarios:+$scenarios,}Server"
if [ -n "$scenarios" ]; then
  step "$scenarios"
  TAIL=25 loadgen "$scenarios"
fi

for qps in ${SERVER_QPS_SWEEP:-}; do
  step "Server at $qps"
  TAIL=3 loadgen Server --server_target_qps "$qps"
done

if has multigpu; then
  present=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
  read -r -a multi_args <<< "${MULTI_ARGS:-}"
  for n in ${GPU_COUNTS:-1 2 4}; do
    if [ "$n" -gt "$present" ]; then echo "multigpu: $n GPUs asked, $present present: skipped" | log; continue; fi
    step "multigpu: Offline on $n GPU(s)"
    extra=(); [ "$n" -gt 1 ] && extra=("${multi_args[@]}")
    CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((n - 1))) TAIL=4 loadgen Offline "${extra[@]}"
  done
fi

# The LoadGen runs of this script: their results table (dlrm-bench report), then their folders
if [ -d "$LOGS" ]; then
  runs=$(cd "$LOGS" && find . -mindepth 1 -maxdepth 1 -name '2*' -type d -newer "$run_marker" | sed 's|^\./||' | sort)
  if [ -n "$runs" ]; then
    step results
    rm -rf "$OUT/runs" && mkdir -p "$OUT/runs"
    for r in $runs; do cp -al "$LOGS/$r" "$OUT/runs/" 2>/dev/null || cp -r "$LOGS/$r" "$OUT/runs/"; done
    "${DLRM[@]}" report --no-plots "$OUT/runs" 2>&1 | tee "$OUT/results.txt" | log
    tar -czf "$OUT/logs.tgz" -C "$OUT/runs" --exclude=mlperf_log_accuracy.json --exclude=mlperf_log_trace.json .
    rm -rf "$OUT/runs"
  fi
fi
rm -f "$run_marker"
