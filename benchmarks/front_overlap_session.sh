#!/usr/bin/env bash
# The sliced pipeline on one GPU, in one device call (run from the repository root on the GPU machine):
#   OUT=<folder> bash benchmarks/front_overlap_session.sh
# 1. the criteo-tb-random preset (gpu_session.sh STEPS=preset) when missing;
# 2. benchmarks/bench_front_overlap.py at full scale (FRONT_ARGS adds flags), which picks the best sliced settings;
# 3. LoadGen Offline (MIN_DURATION s) with the config as shipped, then with those settings (if any beat serial);
# 4. the GPU tests of the CUTLASS kernels and the sliced engine, in the time left (TEST_SECONDS).
set -uo pipefail
here="$(dirname "$0")"
[ -d build/preprocessed_data/criteo/criteo-tb-random ] || STEPS=preset bash "$here/gpu_session.sh"
source "$here/device_env.sh"
timeout 330 python3 "$here/bench_front_overlap.py" --cutlass-final ${FRONT_ARGS:-} --out "$OUT" 2>&1 | tail -16 \
  | tee -a "$OUT/session.log"
best=$(python3 -c "import json; b = json.load(open('$OUT/bench_front_overlap.json'))['best_settings'] or {}; \
print(' '.join(f'--set {k}={v}' for k, v in b.items()))" 2>/dev/null)
echo "best sliced settings: ${best:-none}" | tee -a "$OUT/session.log"
for extra in "" ${best:+"$best"}; do
  python3 -m dlrm_bench.cli run --dataset criteo-tb-random --engine cuda --scenarios Offline \
    --test_mode PerformanceOnly --min_duration "${MIN_DURATION:-30}" $extra 2>&1 | grep -v "/s\]" | tail -4 \
    | tee -a "$OUT/session.log"
done
python3 "$here/summarize_results.py" "$MLPERF_SCRATCH_PATH/logs" | tail -3 | tee -a "$OUT/session.log"
timeout "${TEST_SECONDS:-200}" python3 -m pytest -q -x -p no:cacheprovider tests/test_cutlass_gemm.py \
  tests/test_cuda_engine.py -k "cutlass or sliced or final" 2>&1 | tail -4 | tee -a "$OUT/session.log"
