#!/usr/bin/env bash
# Device-machine session for the Triton serving path. Build the carry first (here): bash benchmarks/make_device_carry.sh
# then, on the device machine (carry [".whl", "build/carry"]):
#   STEP=bench BENCH_ARGS="--engine cuda --dataset-dir ... --model ... --variants in-process,triton-ranges" \
#     bash benchmarks/triton_device_session.sh        (STEP=tests: the Triton tests; BENCH_TIMEOUT: seconds;
#     BENCH_NAME: the JSON file name under $OUT, default bench_triton)
set -u
export PYTHONUNBUFFERED=1
python3 --version; nproc; nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
mkdir -p /tmp/site && tar -xJf build/carry/site.tar.xz -C /tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site build/carry/wheels/*.whl .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD/src:$PWD
export MLPERF_SCRATCH_PATH=$PWD/build
python3 -c "import sysconfig; print('LIBDIR', sysconfig.get_config_var('LIBDIR'), 'shared', sysconfig.get_config_var('Py_ENABLE_SHARED'))"
python3 -c "import tritonclient.grpc, sklearn, matplotlib; from dlrm_bench.triton_server.install import find_triton; print(find_triton())" || exit 1
STEP="${STEP:-bench}"
if [ "$STEP" = bench ]; then
  timeout ${BENCH_TIMEOUT:-520} python3 benchmarks/bench_triton_server.py ${BENCH_ARGS:-} --out "$OUT/${BENCH_NAME:-bench_triton}.json" 2>&1 | grep -v "it/s\]" | tail -70
  cp -r build/bench/triton_logs "$OUT/" 2>/dev/null; true
fi
if [ "$STEP" = tests ]; then
  timeout 520 python3 -m pytest -q -p no:cacheprovider tests/test_triton_server.py 2>&1 | tail -20
fi
