#!/usr/bin/env bash
# The CUDA interaction kernel on one GPU, in one device call (run from the repository root on the GPU machine,
# with build/cutlass carried or built):   OUT=<folder> bash benchmarks/interaction_session.sh
# 1. its GPU tests (bytes against the Triton kernel; the engine with it, in graphs and slices);
# 2. benchmarks/bench_front_energy.py (each front kernel alone at the power limit, and the whole batch);
# 3. the criteo-tb-random preset when missing, then LoadGen Offline (MIN_DURATION s) as shipped and with
#    RUN_B (default: --set interaction_kernel=cuda), one engine load each.
set -uo pipefail
here="$(dirname "$0")"
source "$here/device_env.sh"
timeout "${TEST_SECONDS:-150}" python3 -m pytest -q -x -p no:cacheprovider tests/test_cuda_interaction.py \
  tests/test_cuda_engine.py -k "interaction or sliced or missing" 2>&1 | tail -4 | tee -a "$OUT/session.log"
timeout 300 python3 "$here/bench_front_energy.py" ${ENERGY_ARGS:-} --out "$OUT" 2>&1 | tail -22 | tee -a "$OUT/session.log"
[ -d build/preprocessed_data/criteo/criteo-tb-random ] || STEPS=preset bash "$here/gpu_session.sh" >/dev/null 2>&1
for extra in "" "${RUN_B:---set interaction_kernel=cuda}"; do
  python3 -m dlrm_bench.cli run --dataset criteo-tb-random --engine cuda --scenarios Offline \
    --test_mode PerformanceOnly --min_duration "${MIN_DURATION:-30}" $extra 2>&1 | grep -v "/s\]" | tail -3 \
    | tee -a "$OUT/session.log"
done
python3 "$here/summarize_results.py" "$MLPERF_SCRATCH_PATH/logs" | tail -3 | tee -a "$OUT/session.log"
