# dlrm-bench: seed-compatible verbs. Every target sets up .venv itself, then calls the `dlrm-bench` entry point.
#   make run RUN_ARGS="--benchmarks=dlrm --scenarios=Offline --config_ver=default --test_mode=PerformanceOnly"
#   make test

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DLRM := $(VENV)/bin/dlrm-bench
TORCH_VERSION ?= 2.13.0
TRITON_VERSION ?= 3.6.0
RUN_ARGS ?=
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

export PYTHONUNBUFFERED := 1

.PHONY: help setup run test test_gpu preprocess_data generate_data download_data download_model train \
        generate_engines calibrate bench report audit run_audit_test01 run_audit_test05 serve clean \
        cutlass_gemm

help:
	@echo "make run | test | generate_data | preprocess_data | train | generate_engines | calibrate |"
	@echo "     download_data | download_model | bench | report | audit | run_audit_test01 |"
	@echo "     run_audit_test05 | serve | cutlass_gemm | clean   (see README.md)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV) (torch $(TORCH_VERSION), CPU build) ..."
	$(PY) -m pip install -q --disable-pip-version-check "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[test]" "tritonclient[grpc]>=2.40"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "nvidia-pytriton>=0.5"
	@# OpenAI Triton: the GPU kernels; on a CPU-only machine its interpreter runs them in the tests.
	$(PY) -m pip install -q --disable-pip-version-check "triton==$(TRITON_VERSION)" || echo "triton not installed: GPU kernel tests will skip"
	@touch $@

setup: $(STAMP)

run: $(STAMP)
	$(DLRM) run $(RUN_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(TEST_ARGS)

generate_data: $(STAMP)
	$(DLRM) generate-data $(RUN_ARGS)

preprocess_data: $(STAMP)
	$(DLRM) preprocess $(RUN_ARGS)

download_data: $(STAMP)
	$(DLRM) check-data $(RUN_ARGS)

download_model: $(STAMP)
	$(DLRM) download-model $(RUN_ARGS)

train: $(STAMP)
	$(DLRM) train $(RUN_ARGS)

generate_engines: $(STAMP)
	$(DLRM) generate-engines $(RUN_ARGS)

calibrate: $(STAMP)
	$(DLRM) calibrate $(RUN_ARGS)

# The CUTLASS top-MLP kernels (csrc/*.cu, Hopper sm_90a) as one library loaded with ctypes: needs nvcc (CUDA >= 12.3),
# not a GPU. Header-only use of CUTLASS: the nvidia-cutlass wheel goes in without its Python dependencies.
# About 3 min on 2 cores with `make kernels` (the two sources side by side).
CUTLASS_VERSION ?= 4.2.0.0
NVCC ?= nvcc
CUTLASS_LIB := build/kernels/libdlrm_kernels.so
CUTLASS_HEADERS := build/cutlass/.headers-$(CUTLASS_VERSION)
CUTLASS_OBJECTS := build/cutlass/top_gemm_cutlass.o build/cutlass/final_layer_cutlass.o \
	build/cutlass/interaction_mma.o build/cutlass/bottom_mlp_wgmma.o
NVCC_FLAGS := -std=c++17 -O3 -DNDEBUG -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xcompiler -fPIC
cutlass_gemm: $(CUTLASS_LIB)

$(CUTLASS_HEADERS): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "nvidia-cutlass==$(CUTLASS_VERSION)"
	@mkdir -p build/cutlass && touch $@

build/cutlass/%.o: csrc/%.cu csrc/cutlass_launch.h csrc/whole_row_broadcast.h csrc/permuted_store_epilogue.h \
		$(CUTLASS_HEADERS)
	$(NVCC) $(NVCC_FLAGS) -I"$$($(PY) -c 'import importlib.util as u; print(u.find_spec("cutlass_library").submodule_search_locations[0])')/source/include" \
	  -c -o $@ $<

# libcuda.so.1 for the linker only (CUTLASS's workspace fill calls the driver API directly)
build/cutlass/stub/libcuda.so: csrc/cuda_driver_stub.c
	@mkdir -p build/cutlass/stub
	$(CC) -shared -fPIC -Wl,-soname,libcuda.so.1 -o $@ $<

$(CUTLASS_LIB): $(CUTLASS_OBJECTS) build/cutlass/stub/libcuda.so
	$(NVCC) -shared -o $@.tmp $(CUTLASS_OBJECTS) -Lbuild/cutlass/stub -lcuda && mv $@.tmp $@

bench: $(STAMP)
	$(PY) benchmarks/run_all.py $(RUN_ARGS)

# `make report` = the newest run folder; `make report LOG_DIR=build/logs` = every run.
report: $(STAMP)
	$(DLRM) report $(LOG_DIR)

# MLPerf compliance tests with the flags of `make run`: the plain PerformanceOnly (and, for TEST01,
# AccuracyOnly) runs, then the audited runs, each checked into verify_accuracy.txt / verify_performance.txt.
run_audit_test01: $(STAMP)
	$(DLRM) audit --test TEST01 $(RUN_ARGS)

run_audit_test05: $(STAMP)
	$(DLRM) audit --test TEST05 $(RUN_ARGS)

audit: $(STAMP)
	$(DLRM) audit --test TEST01,TEST05 $(RUN_ARGS)

serve: $(STAMP)
	$(DLRM) serve $(RUN_ARGS)

clean:
	rm -rf build/logs
