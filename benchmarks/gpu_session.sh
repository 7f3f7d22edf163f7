#!/usr/bin/env bash
# One device-machine session for the CUDA engine at full scale (run from the repository root on the GPU machine).
#   STEPS=preset,bench,offline,server  OUT=<folder>  bash benchmarks/gpu_session.sh
# preset : dlrm-bench make-random-preset (criteo-tb-random: 89,137,319 test pairs + 24 GB int8 model) under build/
# tests  : the GPU tests (kernels, engine, harness)
# harness: benchmarks/bench_harness.py (LoadGen + SUT with an instant engine: the harness's own ceiling; HARNESS_ARGS
#          replaces its flags, e.g. "--bridges native --duration 20 --server-qps 740000,800000")
# bench  : benchmarks/bench_cuda.py --tune (kernels vs roofline, tile configurations; with the CUTLASS kernels
#          where build/cutlass holds the library)
# cutlass: the CUTLASS hidden-layer GEMMs (needs build/kernels/libdlrm_kernels.so: `make kernels` here, or
#          carry build/cutlass): their GPU tests, then benchmarks/bench_top_gemm.py (CUTLASS_ARGS adds flags)
# profile: Nsight Compute over benchmarks/profile_batch.py (PROFILE_ARGS: its flags, e.g. --top-gemm a,b; NCU_ARGS:
#          ncu's, default the CUTLASS kernels with speed of light, warp states and source counters) into
#          $OUT/profile.ncu-rep, its details page (profile_details.txt) and per-SASS-line counters (profile_source.csv)
# frontoverlap: benchmarks/bench_front_overlap.py (the sliced pipeline: front beside the top MLP; FRONT_ARGS adds
#          flags; with the CUTLASS kernels where build/cutlass holds the library)
# overlap: benchmarks/bench_overlap.py (1-3 batches in flight on separate streams, 1 or 2 GEMM programs per SM)
# hotcold: benchmarks/bench_hot_cold.py (embedding_weights_on_gpu_part sweep, host-staged inputs +- compression)
# accuracy: the synthetic-tiny model (generated, preprocessed and trained here when missing) through the cuda engine,
#          AccuracyOnly with config_ver default and high_accuracy (the AUC ratio against the FP32 reference)
# triton : benchmarks/triton_device_session.sh (needs build/carry from make_device_carry.sh): in-process vs Triton
#          on criteo-tb-random, Offline + Server at TRITON_QPS (default 300000; a comma list sweeps), with
#          per-request phase times;
#          TRITON_EXTRA adds bench_triton flags (e.g. "--set inflight_batches=6 --set triton_model_inflight=3")
# affinity: Server at AFFINITY_QPS (default 540000) twice: as started, then pinned off the CPUs that serve the
#          GPU's interrupts (irq_cpus.py -> --set cpu_affinity); summarize_results.py prints both with their stalls
# aboffline: one LoadGen Offline run per ";"-separated entry of AB_SETS, each entry that run's extra flags or
#          "shipped" (the config as it is), e.g. AB_SETS="shipped;--set top_gemm=X;shipped"; then their summary
# offline, server : LoadGen PerformanceOnly runs of the cuda engine on criteo-tb-random (MIN_DURATION seconds),
#          both in one `dlrm-bench run` (one engine load); RUN_ARGS adds flags (e.g. --server_target_qps N);
#          SERVER_QPS_SWEEP="a b" adds one Server run per target. TESTS overrides the test files of `tests`.
#          SERVER_AB_SETS="736000;736000 --set server_max_wait_ms=10" adds one Server run per ";"-separated entry:
#          its target, then that run's extra flags (none: the config as it is), then their summary.
# facts  : the host's kernel, NUMA nodes and balancing, THP, CPU layout into session.log
# HOST_SAMPLER=1: every Server run of SERVER_QPS_SWEEP / SERVER_AB_SETS / affinity gets benchmarks/host_sampler.py
#          beside it ($OUT/host_samples_N.npz, SAMPLER_PERIOD_MS apart; its log $OUT/server_run_N.log)
# Wheels missing on the machine (mlcommons-loadgen) are taken from .whl/ if present.
set -uo pipefail
source "$(dirname "$0")/device_env.sh"
STEPS="${STEPS-preset,offline,server}"  # unset: these; empty: none (e.g. only SERVER_QPS_SWEEP)
MIN_DURATION="${MIN_DURATION:-60}"
has() { [[ ",$STEPS," == *",$1,"* ]]; }
dlrm() { python3 -m dlrm_bench.cli "$@"; }
samples=0
server_run() {  # server_run QPS [extra flags]: one Server run of the cuda engine on the preset, its last lines logged
  local qps=$1; shift
  local run=(python3 -m dlrm_bench.cli run --dataset criteo-tb-random --engine cuda --scenarios Server
             --test_mode PerformanceOnly --min_duration "$MIN_DURATION" --server_target_qps "$qps" "$@" ${RUN_ARGS:-})
  if [ -z "${HOST_SAMPLER:-}" ]; then
    "${run[@]}" 2>&1 | grep -v "/s\]" | tail -3 | tee -a "$OUT/session.log"
    return
  fi
  samples=$((samples + 1))  # HOST_SAMPLER=1: benchmarks/host_sampler.py beside the run, on CPU 0 where it can
  "${run[@]}" > "$OUT/server_run_$samples.log" 2>&1 &
  local pid=$!
  local pin=(); command -v taskset >/dev/null && pin=(taskset -c 0)
  "${pin[@]}" python3 benchmarks/host_sampler.py --pid "$pid" --out "$OUT/host_samples_$samples.npz" \
    --period-ms "${SAMPLER_PERIOD_MS:-20}" >> "$OUT/session.log" 2>&1
  wait "$pid"
  grep -v "/s\]" "$OUT/server_run_$samples.log" | tail -3 | tee -a "$OUT/session.log"
  grep -m1 -- "^--- Server" "$OUT/server_run_$samples.log" | tee -a "$OUT/session.log"
}
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv,noheader
if has facts; then  # the host's NUMA, THP and CPU layout (what can slow a thread's work while it runs)
  { uname -r; nproc; lscpu 2>/dev/null | grep -Ei "model name|socket|core|thread|numa|mhz|hypervisor"
    for f in /proc/sys/kernel/numa_balancing /sys/kernel/mm/transparent_hugepage/enabled \
             /sys/kernel/mm/transparent_hugepage/defrag /proc/sys/kernel/sched_autogroup_enabled; do
      [ -r "$f" ] && echo "$f: $(cat "$f")"; done
    ls -d /sys/devices/system/node/node* 2>/dev/null; nvidia-smi topo -m 2>/dev/null | head -4
    grep -E "^numa_|^thp_collapse|^nr_tlb" /proc/vmstat; } 2>&1 | tee -a "$OUT/session.log"
fi
if has preset; then
  start=$(date +%s); dlrm make-random-preset 2>&1 | grep -v "/s\]" | tail -5 | tee -a "$OUT/session.log"; echo "preset: $(( $(date +%s) - start )) s" | tee -a "$OUT/session.log"
fi
if has tests; then
  timeout 400 python3 -m pytest -q -x -p no:cacheprovider ${TESTS:-tests/test_cuda_kernels.py tests/test_cuda_engine.py \
    tests/test_packing.py tests/test_sample_queue.py} 2>&1 | tail -15 | tee -a "$OUT/session.log"
fi
if has harness; then
  timeout 200 python3 benchmarks/bench_harness.py ${HARNESS_ARGS:---duration 8 --server-qps 300000,600000} --out "$OUT" 2>&1 \
    | tail -9 | tee -a "$OUT/session.log"
fi
if has hotcold; then
  timeout 400 python3 benchmarks/bench_hot_cold.py --out "$OUT" 2>&1 | grep -v "/s\]" | tail -30 | tee -a "$OUT/session.log"
fi
if has bench; then
  default_bench="--tune --batches 262144"  # + the configs' CUTLASS kernels where the library is built
  [ -f build/kernels/libdlrm_kernels.so ] && default_bench="$default_bench --top-gemm 128x128_c1x2_pingpong_fma --cutlass-final"
  timeout 300 python3 benchmarks/bench_cuda.py ${BENCH_ARGS:-$default_bench} --out "$OUT" 2>&1 | tail -22 | tee -a "$OUT/session.log"
fi
if has cutlass; then
  timeout 300 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernel_library.py 2>&1 | tail -6 | tee -a "$OUT/session.log"
  timeout 400 python3 benchmarks/bench_top_gemm.py ${CUTLASS_ARGS:-} --out "$OUT" 2>&1 | tail -30 | tee -a "$OUT/session.log"
fi
if has profile; then
  ncu_default="--kernel-name regex:device_kernel --section SpeedOfLight --section WarpStateStats --section SourceCounters"
  timeout 400 ncu --clock-control none --profile-from-start off ${NCU_ARGS:-$ncu_default} -f -o "$OUT/profile" \
    python3 benchmarks/profile_batch.py ${PROFILE_ARGS:-} 2>&1 | tail -12 | tee -a "$OUT/session.log"
  ncu --import "$OUT/profile.ncu-rep" --page details > "$OUT/profile_details.txt" 2>&1
  ncu --import "$OUT/profile.ncu-rep" --page source --csv --print-source sass > "$OUT/profile_source.csv" 2>&1
fi
if has frontoverlap; then
  front_default="--top-gemm triton"
  [ -f build/kernels/libdlrm_kernels.so ] && front_default="--cutlass-final"
  timeout 400 python3 benchmarks/bench_front_overlap.py $front_default ${FRONT_ARGS:-} --out "$OUT" 2>&1 | tail -20 \
    | tee -a "$OUT/session.log"
fi
if has overlap; then
  timeout 300 python3 benchmarks/bench_overlap.py ${OVERLAP_ARGS:-} --out "$OUT" 2>&1 | tail -16 | tee -a "$OUT/session.log"
fi
if has accuracy; then
  dlrm run --dataset synthetic-tiny --engine cuda --scenarios Offline --config_ver default,high_accuracy \
    --test_mode AccuracyOnly 2>&1 | grep -v "/s\]" | tail -8 | tee -a "$OUT/session.log"
fi
if has triton; then
  STEP=bench BENCH_TIMEOUT="${TRITON_TIMEOUT:-420}" BENCH_ARGS="--engine cuda --dataset-dir \
build/preprocessed_data/criteo/criteo-tb-random --model build/models/dlrm/criteo-tb-random \
--variants in-process,triton-ranges --repeats 1 --offline-duration 15 --server-duration 25 \
--server-qps ${TRITON_QPS:-300000} --set triton_trace=true ${TRITON_EXTRA:-}" bash "$(dirname "$0")/triton_device_session.sh" \
    2>&1 | tee "$OUT/triton.log" | tail -40 | tee -a "$OUT/session.log"
fi
if has affinity; then
  python3 benchmarks/irq_cpus.py --show >/dev/null 2>>"$OUT/session.log"
  pinned=$(python3 benchmarks/irq_cpus.py 2>/dev/null)  # empty when no CPU is free of the GPU's interrupts
  echo "cpu_affinity for the pinned run: ${pinned:-none}" | tee -a "$OUT/session.log"
  server_run "${AFFINITY_QPS:-540000}"
  [ -n "$pinned" ] && server_run "${AFFINITY_QPS:-540000}" --set "cpu_affinity=$pinned"
  python3 benchmarks/summarize_results.py "$MLPERF_SCRATCH_PATH/logs" | tail -2 | tee -a "$OUT/session.log"
fi
if has aboffline; then  # one Offline run per ";"-separated AB_SETS entry (extra flags, or "shipped")
  IFS=';' read -r -a ab_entries <<< "${AB_SETS:-shipped}"
  for flags in "${ab_entries[@]}"; do
    [ "$flags" = shipped ] && flags=""
    echo "Offline ${flags:-(shipped config)}" | tee -a "$OUT/session.log"
    dlrm run --dataset criteo-tb-random --engine cuda --scenarios Offline --test_mode PerformanceOnly \
      --min_duration "$MIN_DURATION" $flags ${RUN_ARGS:-} 2>&1 | grep -v "/s\]" | tail -2 | tee -a "$OUT/session.log"
  done
  python3 benchmarks/summarize_results.py "$MLPERF_SCRATCH_PATH/logs" | tail -$(( ${#ab_entries[@]} + 1 )) \
    | tee -a "$OUT/session.log"
fi
scenarios=""
has offline && scenarios="Offline"
has server && scenarios="${scenarios:+$scenarios,}Server"
if [ -n "${SERVER_QPS_SWEEP:-}" ]; then  # Server only, one run per target (one engine load each)
  for qps in $SERVER_QPS_SWEEP; do server_run "$qps"; done
fi
if [ -n "${SERVER_AB_SETS:-}" ]; then  # one Server run per ";"-separated "QPS [flags]" entry
  IFS=';' read -r -a server_entries <<< "$SERVER_AB_SETS"
  for entry in "${server_entries[@]}"; do
    read -r -a words <<< "$entry"
    echo "Server ${entry}" | tee -a "$OUT/session.log"
    server_run "${words[@]}"
  done
  python3 benchmarks/summarize_results.py "$MLPERF_SCRATCH_PATH/logs" | tail -${#server_entries[@]} | tee -a "$OUT/session.log"
fi
if [ -n "$scenarios" ]; then
  dlrm run --dataset criteo-tb-random --engine cuda --scenarios "$scenarios" --test_mode PerformanceOnly \
    --min_duration "$MIN_DURATION" ${RUN_ARGS:-} 2>&1 | grep -v "/s\]" | tail -25 | tee -a "$OUT/session.log"
fi
# runs with --set stall_trace_ms=N (e.g. in RUN_ARGS or SERVER_AB_SETS): where the threads were at each long stall
find "$MLPERF_SCRATCH_PATH/logs" -name stall_traces.txt 2>/dev/null | sort | while read -r traces; do
  echo "$traces" | tee -a "$OUT/session.log"
  python3 benchmarks/stall_traces.py "$traces" --top 8 2>&1 | tee -a "$OUT/session.log"
done
if [ -d "$MLPERF_SCRATCH_PATH/logs" ]; then  # every run folder on this machine, less LoadGen's accuracy / trace logs
  (cd "$MLPERF_SCRATCH_PATH/logs" && find . -mindepth 1 -maxdepth 1 -name '2*' -type d | sort \
    | tar -czf "$OUT/logs.tgz" --exclude=mlperf_log_accuracy.json --exclude=mlperf_log_trace.json -T - 2>/dev/null)
fi
