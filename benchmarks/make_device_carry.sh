#!/usr/bin/env bash
# Build what the device machine (Python 3.12, no internet) lacks, for the device tool's `carry`:
#   .whl/        cp312 mlcommons-loadgen + pytest wheels   (carry [".whl"]: benchmarks/gpu_session.sh, multi_gpu_session.sh)
#   build/carry/ the Triton client/server side: cp312 wheels of tritonclient's compiled dependencies and site.tar.xz
#                (tritonclient, protobuf, packaging, nvidia-pytriton with its tritonserver binary)
#                (carry [".whl", "build/carry"]: benchmarks/triton_device_session.sh)
# Both stay under 64 MiB (the device tool's carry limit). Run from the repository root: bash benchmarks/make_device_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312)
for tag in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_27 manylinux_2_28; do TARGET+=(--platform "${tag}_x86_64"); done
pip_quiet() { "$PY" -m pip "$@" -q --disable-pip-version-check; }

rm -rf .whl.tmp && mkdir -p .whl.tmp
pip_quiet download --no-deps "${TARGET[@]}" -d .whl.tmp "mlcommons-loadgen==6.0.17"
pip_quiet download --no-deps --only-binary=:all: -d .whl.tmp pytest iniconfig pluggy packaging
rm -rf .whl && mv .whl.tmp .whl

tmp=build/carry.tmp
rm -rf "$tmp" && mkdir -p "$tmp/wheels" "$tmp/site"
pip_quiet download --no-deps "${TARGET[@]}" -d "$tmp/wheels" "grpcio==1.85.3" ml_dtypes "python-rapidjson==1.25"
pip_quiet install --no-deps --no-compile --target "$tmp/site" "nvidia-pytriton==0.7.0" "tritonclient==2.73.0" \
  "protobuf==6.33.6" packaging
find "$tmp/site" -maxdepth 1 -name "*.dist-info" -exec rm -rf {} +
rm -rf "$tmp/site/bin"
tar -cJf "$tmp/site.tar.xz" -C "$tmp/site" .
rm -rf "$tmp/site"
rm -rf build/carry && mv "$tmp" build/carry
du -sh .whl build/carry
