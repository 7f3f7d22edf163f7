# dlrm-bench: seed-compatible verbs. Every target sets up .venv itself, then calls the `dlrm-bench` entry point.
#   make run RUN_ARGS="--benchmarks=dlrm --scenarios=Offline --config_ver=default --test_mode=PerformanceOnly"
#   make test
# `make help` lists the targets; docs/gpu.md covers GPU hosts, offline hosts and the GPU run script.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DLRM := $(VENV)/bin/dlrm-bench
TORCH_VERSION ?= 2.13.0
TRITON_VERSION ?= 3.6.0
RUN_ARGS ?=
TEST_ARGS ?=

export PYTHONUNBUFFERED := 1

# ---------------------------------------------------------------------------------------------------------------
# Which host is this? A GPU host is one where `nvidia-smi -L` lists a GPU or /dev/nvidia0 exists.
# HOST_KIND=cpu forces the CPU path on a GPU host.
GPU_DESC := $(shell nvidia-smi -L 2>/dev/null | sed -n 's/^GPU [0-9]*: //p' | sed 's/ .UUID:.*//' | sort | uniq -c \
	| awk '{n = $$1; $$1 = ""; sub(/^ /, ""); printf "%s%s%s", sep, (n > 1 ? n " x " : ""), $$0; sep = ", "}')
HOST_KIND ?= $(if $(GPU_DESC)$(wildcard /dev/nvidia0),gpu,cpu)
ifeq ($(HOST_KIND),gpu)
  GPU_DESC := $(or $(GPU_DESC),$(if $(wildcard /dev/nvidia0),/dev/nvidia0; nvidia-smi lists no GPU,no GPU found))
  GPU_CAPS := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -u)
endif

# nvcc: on PATH, else $CUDA_HOME/bin, else /usr/local/cuda/bin (NVCC=... names another)
ifeq ($(origin NVCC),undefined)
  NVCC := $(or $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard $(CUDA_HOME)/bin/nvcc /usr/local/cuda/bin/nvcc)),nvcc)
endif
NATIVE_KERNELS ?= auto
# On a GPU host with nvcc >= 12.3 and a Hopper GPU (or one whose compute capability nvidia-smi does not tell),
# setup builds the native kernel library too; everywhere else the engine runs the OpenAI Triton kernels.
ifeq ($(HOST_KIND),gpu)
  NVCC_VERSION := $(shell $(NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p')
  NVCC_OLD := $(if $(NVCC_VERSION),$(shell [ "$$(printf '%s\n' 12.3 $(NVCC_VERSION) | sort -V | head -1)" = 12.3 ] || echo old))
  NOT_HOPPER := $(if $(GPU_CAPS),$(if $(filter 9.%,$(GPU_CAPS)),,yes))
  ifeq ($(NATIVE_KERNELS),no)
    KERNEL_NOTE := NATIVE_KERNELS=no: the OpenAI Triton kernels will run
  else ifeq ($(NVCC_VERSION),)
    KERNEL_NOTE := nvcc not found: the OpenAI Triton kernels will run instead of the native kernels
  else ifneq ($(NVCC_OLD),)
    KERNEL_NOTE := nvcc $(NVCC_VERSION) is older than 12.3: the OpenAI Triton kernels will run instead of the native kernels
  else ifneq ($(NOT_HOPPER),)
    KERNEL_NOTE := compute capability $(GPU_CAPS), not Hopper: the OpenAI Triton kernels will run (the native kernels are sm_90a)
  else
    KERNEL_NOTE := nvcc $(NVCC_VERSION) found: building the native kernels
    SETUP_KERNELS := yes
  endif
endif

# The torch a GPU host installs when its Python has no CUDA torch: the dependency pyproject.toml declares, from
# PyPI's default index (its Linux x86_64 wheels are CUDA builds).
ifeq ($(origin GPU_TORCH),undefined)
  GPU_TORCH := $(shell sed -n 's/^ *"\(torch[^"]*\)",*$$/\1/p' pyproject.toml)
endif

# Packages for hosts without network: `make wheelhouse` (on a connected machine) fills build/wheelhouse; `make setup`
# on a GPU host installs from there with pip --no-index when it holds wheels for its Python (WHEELHOUSE=DIR: from DIR,
# on any host).
WHEELHOUSE ?=
WHEELHOUSE_DIR := build/wheelhouse
WHEELHOUSE_PYTHON ?= 3.12
WHEELHOUSE_GLIBC ?= 2.35
WHEELHOUSE_EXTRAS ?=
WHEELHOUSE_SKIP ?= numpy scipy

# The stamp says which path made .venv, so that repeated calls install nothing and a change of path starts anew.
STAMP := $(VENV)/.installed-$(if $(filter gpu,$(HOST_KIND)),gpu,cpu-torch$(TORCH_VERSION))

# The native kernel library (csrc/*.cu, Hopper sm_90a): CUTLASS top-MLP GEMMs, the CUDA interaction and bottom MLP.
CUTLASS_VERSION ?= 4.2.0.0
GEMM_VARIANTS ?= configs
KERNELS_DIR := build/kernels
KERNELS_LIB := $(KERNELS_DIR)/libdlrm_kernels.so
KERNELS_OBJECTS := $(patsubst csrc/%.cu,$(KERNELS_DIR)/%.o,$(wildcard csrc/*.cu))
KERNELS_FLAGS := $(KERNELS_DIR)/.nvcc-flags
CUTLASS_HEADERS := $(VENV)/.cutlass-$(CUTLASS_VERSION)
NVCC_FLAGS := -std=c++17 -O3 -DNDEBUG -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -Xcompiler -fPIC
ifeq ($(GEMM_VARIANTS),all)
  NVCC_FLAGS += -DDLRM_ALL_GEMM_VARIANTS
else ifneq ($(GEMM_VARIANTS),configs)
  $(error GEMM_VARIANTS is configs (the variants the configs use, the default) or all)
endif
# where the venv's Python finds the headers (before they are installed: where the wheel will put them)
CUTLASS_INCLUDE = $(or $(shell $(PY) -c 'import importlib.util as u; s = u.find_spec("cutlass_library"); \
	print(s.submodule_search_locations[0] + "/source/include" if s else "")' 2>/dev/null),$(abspath $(VENV))/lib/python$(shell \
	$(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages/cutlass_library/source/include)

SETUP := $(STAMP) $(if $(SETUP_KERNELS),$(KERNELS_LIB))

.PHONY: help setup setup_plan run test find_peak preprocess_data generate_data download_data download_model train \
        generate_engines calibrate bench report audit run_audit_test01 run_audit_test05 serve docs kernels \
        wheelhouse clean stage_results check_submission run_submission_checker

help:
	@echo "make setup            create .venv for this host (CPU: torch $(TORCH_VERSION) CPU build; GPU: its CUDA torch,"
	@echo "                      + the native kernels where nvcc and a Hopper GPU are); every target runs it first"
	@echo "make setup_plan       say which path setup takes here, install nothing"
	@echo "make run              dlrm-bench run \$$(RUN_ARGS): the benchmark through LoadGen"
	@echo "make test             pytest \$$(TEST_ARGS) (GPU tests skip without CUDA)"
	@echo "make generate_data | preprocess_data | download_data | download_model | train |"
	@echo "     generate_engines | calibrate | serve      the dlrm-bench verbs, with \$$(RUN_ARGS)"
	@echo "make audit | run_audit_test01 | run_audit_test05    MLPerf compliance tests with \$$(RUN_ARGS)"
	@echo "make find_peak        the highest VALID Server target here, into build/user_settings/ (\$$(RUN_ARGS))"
	@echo "make report           results table (LOG_DIR=... for another folder)"
	@echo "make stage_results | check_submission | run_submission_checker    MLPerf submission tree (docs/submission.md)"
	@echo "make bench            benchmarks/run_all.py \$$(RUN_ARGS)"
	@echo "make kernels          build $(KERNELS_LIB) (nvcc >= 12.3; GEMM_VARIANTS=all for every variant; make -j2 kernels)"
	@echo "make docs             regenerate the settings table in docs/configuration.md"
	@echo "make wheelhouse       download into $(WHEELHOUSE_DIR) the wheels an offline GPU host needs"
	@echo "                      (WHEELHOUSE_PYTHON=$(WHEELHOUSE_PYTHON), WHEELHOUSE_EXTRAS=triton-server)"
	@echo "make clean            remove build/logs"
	@echo "(README.md; docs/gpu.md for GPU hosts)"

# ---------------------------------------------------------------------------------------------------------------
# setup: the script below runs in the stamp's recipe, with the Make variables it needs in its environment.
define setup_script
set -euo pipefail
say() { echo "setup: $*"; }

wheelhouse="$WHEELHOUSE"
if [ -z "$wheelhouse" ] && [ "$HOST_KIND" = gpu ] && ls "$WHEELHOUSE_DIR"/*.whl >/dev/null 2>&1; then
  here=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  made_for=$(cat "$WHEELHOUSE_DIR/python-version" 2>/dev/null || true)
  if [ "$made_for" = "$here" ]; then wheelhouse=$WHEELHOUSE_DIR
  else say "ignoring $WHEELHOUSE_DIR: its wheels are for Python ${made_for:-?}, this one is $here"; fi
fi

mode=cpu
if [ "$HOST_KIND" = gpu ]; then
  # Does the Python that makes the venv already import a CUDA build of torch that pyproject admits?
  probe=$("$PYTHON" - "$GPU_TORCH" <<'EOF' 2>/dev/null || true
import sys
import torch
try:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version
except ImportError:
    from pip._vendor.packaging.specifiers import SpecifierSet
    from pip._vendor.packaging.version import Version
spec = SpecifierSet(sys.argv[1].removeprefix("torch"))
ok = Version(Version(torch.__version__).base_version) in spec
print(torch.__version__, torch.version.cuda or "-", "yes" if ok else "no", sys.executable)
EOF
)
  read -r torch_version torch_cuda torch_ok python_path <<< "${probe:-- - no -}"
  if [ "$torch_cuda" != - ] && [ "$torch_ok" = yes ]; then
    mode=reuse
    line="GPU host ($GPU_DESC): torch $torch_version reused from $python_path (CUDA $torch_cuda)"
  else
    mode=install
    if [ "$torch_version" = - ]; then why="no torch in $PYTHON"
    elif [ "$torch_cuda" = - ]; then why="torch $torch_version in $PYTHON is a CPU build"
    else why="torch $torch_version in $PYTHON is outside $GPU_TORCH"; fi
    line="GPU host ($GPU_DESC): $why: installing $GPU_TORCH, PyPI's default Linux wheel (a CUDA build)"
  fi
  line="$line; $KERNEL_NOTE"
else
  line="CPU host ($CPU_WHY): torch $TORCH_VERSION CPU build"
fi
[ -n "$wheelhouse" ] && line="$line; offline, from $wheelhouse"
say "$line"
[ "${PLAN_ONLY:-}" = 1 ] && exit 0

# A venv made for another path (or by an older Makefile) is made anew.
system_site=no; [ "$mode" = reuse ] && system_site=yes
if [ -e "$VENV" ]; then
  other=""
  for stamp in "$VENV"/.installed-*; do
    [ -e "$stamp" ] && [ "$stamp" != "$STAMP" ] || continue
    # .installed-<torch version>: the CPU path of an older Makefile, the same venv
    if [ "$mode" = cpu ] && [ "$stamp" = "$VENV/.installed-$TORCH_VERSION" ]; then rm -f "$stamp"; continue; fi
    other=${stamp##*/.installed-}
  done
  has_system_site=no
  grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null && has_system_site=yes
  if [ -n "$other" ] || [ "$has_system_site" != "$system_site" ] || [ ! -x "$VENV/bin/python" ]; then
    say "$VENV was made for another setup${other:+ ($other)}: making it anew"
    rm -rf "$VENV"
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  if [ "$system_site" = yes ]; then "$PYTHON" -m venv --system-site-packages "$VENV"; else "$PYTHON" -m venv "$VENV"; fi
fi
if [ "$mode" = reuse ]; then
  # A Python that is itself a virtual environment (e.g. /opt/torch/.venv/bin/python3) has its packages in its own
  # site-packages, which --system-site-packages does not reach: a .pth file adds them after the venv's own.
  base_sites=$("$PYTHON" -c 'import site, sys; sys.prefix != sys.base_prefix and print("\n".join(site.getsitepackages()))')
  [ -z "$base_sites" ] || echo "$base_sites" \
    > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_base_python.pth"
fi

pip() { "$VENV/bin/python" -m pip -q --disable-pip-version-check "$@"; }
source=(); editable=(-e ".[test]")
if [ -n "$wheelhouse" ]; then
  source=(--no-index --find-links "$wheelhouse")
  editable=(--no-build-isolation -e ".[test]")   # no index to fetch a build environment from
  pip install "${source[@]}" "setuptools>=68"
fi
offline_hint() { [ -z "$wheelhouse" ] || say "$@"; exit 1; }
case $mode in
  cpu) pip install "${source[@]}" "torch==$TORCH_VERSION" ;;
  install) pip install "${source[@]}" "$GPU_TORCH" \
    || offline_hint "no torch wheel in $wheelhouse: use a Python that has a CUDA torch (make setup PYTHON=...)" ;;
esac
pip install "${source[@]}" "${editable[@]}" "tritonclient[grpc]>=2.40" \
  || offline_hint "a package this host lacks is not in $wheelhouse (see above): run make wheelhouse on a connected" \
       "machine (WHEELHOUSE_SKIP= keeps numpy and scipy too)"
# the tritonserver binary (nvidia-pytriton, without its Python dependencies)
if [ -n "$wheelhouse" ] && ! ls "$wheelhouse"/nvidia_pytriton-*.whl >/dev/null 2>&1; then
  say "no nvidia-pytriton wheel in $wheelhouse: no tritonserver binary, the Triton Inference Server tests skip" \
      "(make wheelhouse WHEELHOUSE_EXTRAS=triton-server adds it)"
else
  pip install "${source[@]}" --no-deps "nvidia-pytriton>=0.5"
fi
if [ "$mode" = cpu ]; then
  # OpenAI Triton: on a CPU host its interpreter runs the GPU kernels in the tests.
  pip install "${source[@]}" "triton==$TRITON_VERSION" || say "triton not installed: its kernel tests will skip"
fi
touch "$STAMP"
endef

SETUP_ENV = VENV="$(VENV)" STAMP="$(STAMP)" PYTHON="$(PYTHON)" HOST_KIND="$(HOST_KIND)" GPU_DESC="$(GPU_DESC)" \
	TORCH_VERSION="$(TORCH_VERSION)" TRITON_VERSION="$(TRITON_VERSION)" GPU_TORCH="$(GPU_TORCH)" \
	CPU_WHY="$(if $(filter file,$(origin HOST_KIND)),no NVIDIA GPU,HOST_KIND=cpu)" \
	KERNEL_NOTE="$(KERNEL_NOTE)" WHEELHOUSE="$(WHEELHOUSE)" WHEELHOUSE_DIR="$(WHEELHOUSE_DIR)"

$(STAMP) setup_plan: export SETUP_SCRIPT = $(value setup_script)

$(STAMP): pyproject.toml
	@$(SETUP_ENV) bash -c "$$SETUP_SCRIPT"

setup: $(SETUP)

setup_plan:
	@$(SETUP_ENV) PLAN_ONLY=1 bash -c "$$SETUP_SCRIPT"

# ---------------------------------------------------------------------------------------------------------------
run: $(SETUP)
	$(DLRM) run $(RUN_ARGS)

test: $(SETUP)
	$(PY) -m pytest -q $(TEST_ARGS)

generate_data: $(SETUP)
	$(DLRM) generate-data $(RUN_ARGS)

preprocess_data: $(SETUP)
	$(DLRM) preprocess $(RUN_ARGS)

download_data: $(SETUP)
	$(DLRM) check-data $(RUN_ARGS)

download_model: $(SETUP)
	$(DLRM) download-model $(RUN_ARGS)

train: $(SETUP)
	$(DLRM) train $(RUN_ARGS)

generate_engines: $(SETUP)
	$(DLRM) generate-engines $(RUN_ARGS)

calibrate: $(SETUP)
	$(DLRM) calibrate $(RUN_ARGS)

bench: $(SETUP)
	$(PY) benchmarks/run_all.py $(RUN_ARGS)

# `make report` = the newest run folder; `make report LOG_DIR=build/logs` = every run.
report: $(SETUP)
	$(DLRM) report $(LOG_DIR)

# MLPerf compliance tests with the flags of `make run`: the plain PerformanceOnly (and, for TEST01,
# AccuracyOnly) runs, then the audited runs, each checked into verify_accuracy.txt / verify_performance.txt.
run_audit_test01: $(SETUP)
	$(DLRM) audit --test TEST01 $(RUN_ARGS)

run_audit_test05: $(SETUP)
	$(DLRM) audit --test TEST05 $(RUN_ARGS)

audit: $(SETUP)
	$(DLRM) audit --test TEST01,TEST05 $(RUN_ARGS)

serve: $(SETUP)
	$(DLRM) serve $(RUN_ARGS)

# The highest Server target that comes out VALID here (or Offline's expected QPS), into build/user_settings/.
find_peak: $(SETUP)
	$(DLRM) find-peak $(RUN_ARGS)

# MLPerf v3.0 submission: stage the newest runs into build/submission/<division>/<submitter>/, check it
# (docs/submission.md): RUN_ARGS="--submitter ORG --division closed|open" / RUN_ARGS="--checker PATH".
stage_results: $(SETUP)
	$(DLRM) stage-results $(RUN_ARGS)

check_submission: $(SETUP)
	$(DLRM) check-submission $(RUN_ARGS)

run_submission_checker: $(SETUP)
	$(DLRM) run-submission-checker $(RUN_ARGS)

# The settings table of docs/configuration.md, between its marker lines, from the settings schema.
SETTINGS_BEGIN := <!-- settings:begin -->
SETTINGS_END := <!-- settings:end -->
docs: $(SETUP)
	@grep -qxF '$(SETTINGS_BEGIN)' docs/configuration.md && grep -qxF '$(SETTINGS_END)' docs/configuration.md \
	  || { echo "docs/configuration.md needs the lines $(SETTINGS_BEGIN) and $(SETTINGS_END)"; exit 1; }
	@mkdir -p build
	$(PY) -m dlrm_bench.settings > build/settings.md
	awk -v table=build/settings.md -v begin='$(SETTINGS_BEGIN)' -v end='$(SETTINGS_END)' \
	  '$$0 == begin { print; while ((getline line < table) > 0) print line; skip = 1; next } $$0 == end { skip = 0 } !skip' \
	  docs/configuration.md > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

# ---------------------------------------------------------------------------------------------------------------
# The native kernel library, loaded with ctypes (src/dlrm_bench/engines/cuda/kernel_library.py; DLRM_KERNELS_LIB
# names another file). Needs nvcc >= 12.3, not a GPU. Header-only use of CUTLASS: the nvidia-cutlass wheel goes in
# without its Python dependencies. Only the GEMM variants the configs use unless GEMM_VARIANTS=all. About 4 min on
# 2 cores with `make -j2 kernels` (the sources side by side).
kernels: $(KERNELS_LIB)

# from the wheelhouse when there is one with the wheel
CUTLASS_WHEELS := $(or $(WHEELHOUSE),$(if $(wildcard $(WHEELHOUSE_DIR)/nvidia_cutlass-$(CUTLASS_VERSION)-*.whl),$(WHEELHOUSE_DIR)))
CUTLASS_SOURCE := $(if $(CUTLASS_WHEELS),--no-index --find-links $(CUTLASS_WHEELS))
$(CUTLASS_HEADERS): $(STAMP)
	$(strip $(PY) -m pip install -q --disable-pip-version-check --no-deps $(CUTLASS_SOURCE) "nvidia-cutlass==$(CUTLASS_VERSION)")
	@touch $@

# The compiler, flags and CUTLASS version of the last build, a prerequisite of every object: when they change
# (GEMM_VARIANTS, NVCC, CUTLASS_VERSION), the file is rewritten here, as the Makefile is read, and the objects rebuild.
KERNELS_BUILD := $(strip $(NVCC) $(NVCC_FLAGS) cutlass-$(CUTLASS_VERSION))
ifneq ($(wildcard $(KERNELS_FLAGS)),)
  ifneq ($(shell cat $(KERNELS_FLAGS)),$(KERNELS_BUILD))
    ifeq ($(findstring n,$(firstword -$(MAKEFLAGS)))$(findstring q,$(firstword -$(MAKEFLAGS))),)
      $(shell echo '$(KERNELS_BUILD)' > $(KERNELS_FLAGS))
    else
      .PHONY: $(KERNELS_FLAGS)  # make -n / -q: show the rebuild, change nothing
    endif
  endif
endif
$(KERNELS_FLAGS):
	@mkdir -p $(@D)
	@echo '$(KERNELS_BUILD)' > $@

$(KERNELS_DIR)/%.o: csrc/%.cu $(wildcard csrc/*.h) $(KERNELS_FLAGS) | $(CUTLASS_HEADERS)
	@test -d "$(CUTLASS_INCLUDE)" || { echo "nvidia-cutlass headers not found at $(CUTLASS_INCLUDE)"; exit 1; }
	$(NVCC) $(NVCC_FLAGS) -I"$(CUTLASS_INCLUDE)" -c -o $@ $<

# libcuda.so.1 for the linker only (CUTLASS's workspace fill calls the driver API directly)
$(KERNELS_DIR)/stub/libcuda.so: csrc/cuda_driver_stub.c
	@mkdir -p $(@D)
	$(CC) -shared -fPIC -Wl,-soname,libcuda.so.1 -o $@ $<

$(KERNELS_LIB): $(KERNELS_OBJECTS) $(KERNELS_DIR)/stub/libcuda.so
	$(NVCC) -shared -o $@.tmp $(KERNELS_OBJECTS) -L$(KERNELS_DIR)/stub -lcuda && mv $@.tmp $@


# ---------------------------------------------------------------------------------------------------------------
# Wheels for a GPU host without network (run on a connected machine): everything pyproject.toml asks for (the
# dependencies, the test extra, tritonclient[grpc]) with their dependencies, for CPython WHEELHOUSE_PYTHON on
# manylinux x86_64 (glibc <= WHEELHOUSE_GLIBC), less torch, OpenAI Triton and the CUDA libraries (the host's CUDA
# torch brings them) and WHEELHOUSE_SKIP (default numpy, scipy: a CUDA PyTorch install has them; WHEELHOUSE_SKIP=
# keeps them), plus nvidia-cutlass for `make kernels`. WHEELHOUSE_EXTRAS=triton-server adds nvidia-pytriton (the
# tritonserver binary, about 55 MB). Then copy the repository with build/wheelhouse to the host and run make there.
define wheelhouse_script
set -euo pipefail
tmp="$WHEELHOUSE_DIR.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
target=(--only-binary=:all: --python-version "$WHEELHOUSE_PYTHON" --implementation cp
        --abi "cp${WHEELHOUSE_PYTHON/./}" --platform manylinux2014_x86_64)
for minor in $(seq 17 "${WHEELHOUSE_GLIBC#2.}"); do target+=(--platform "manylinux_2_${minor}_x86_64"); done
pip() { "$PYTHON" -m pip --disable-pip-version-check "$@"; }
# the requirements, from pyproject.toml (torch comes with the host)
mapfile -t requirements < <("$PYTHON" - <<'EOF'
try:
    import tomllib
except ImportError:
    from pip._vendor import tomli as tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
wanted = project["dependencies"] + extras["test"] + [r for r in extras["triton-server"] if r.startswith("tritonclient")]
print("\n".join(r for r in wanted if not r.startswith("torch")))
EOF
)
echo "wheelhouse: resolving ${requirements[*]} for CPython $WHEELHOUSE_PYTHON"
pip install -q --dry-run --ignore-installed --target "$tmp/resolve" "${target[@]}" --report "$tmp/report.json" \
  "${requirements[@]}"
mapfile -t pins < <("$PYTHON" - "$tmp/report.json" $WHEELHOUSE_SKIP <<'EOF'
import json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
skip = {norm(n) for n in sys.argv[2:]} | {"torch", "triton"}
for item in json.load(open(sys.argv[1]))["install"]:
    name = norm(item["metadata"]["name"])
    if name in skip or (name.startswith(("nvidia-", "cuda-")) and name not in ("nvidia-cutlass", "nvidia-pytriton")):
        continue
    print(f"{name}=={item['metadata']['version']}")
EOF
)
extra=("nvidia-cutlass==$CUTLASS_VERSION" "setuptools>=68")   # setuptools: the editable install, offline
[[ " $WHEELHOUSE_EXTRAS " == *" triton-server "* ]] && extra+=("nvidia-pytriton>=0.5")
pip download -q --no-deps "${target[@]}" -d "$tmp" "${pins[@]}" "${extra[@]}"
rm -rf "$tmp/resolve" "$tmp/report.json"
echo "$WHEELHOUSE_PYTHON" > "$tmp/python-version"
rm -rf "$WHEELHOUSE_DIR" && mv "$tmp" "$WHEELHOUSE_DIR"
echo "wheelhouse: $(ls "$WHEELHOUSE_DIR"/*.whl | wc -l) wheels, $(du -sh "$WHEELHOUSE_DIR" | cut -f1) in $WHEELHOUSE_DIR" \
  "(skipped: torch, triton, CUDA libraries${WHEELHOUSE_SKIP:+, $WHEELHOUSE_SKIP})"
endef

wheelhouse: export WHEELHOUSE_SCRIPT = $(value wheelhouse_script)
wheelhouse:
	@PYTHON="$(PYTHON)" WHEELHOUSE_DIR="$(WHEELHOUSE_DIR)" WHEELHOUSE_PYTHON="$(WHEELHOUSE_PYTHON)" \
	  WHEELHOUSE_GLIBC="$(WHEELHOUSE_GLIBC)" WHEELHOUSE_EXTRAS="$(WHEELHOUSE_EXTRAS)" WHEELHOUSE_SKIP="$(WHEELHOUSE_SKIP)" \
	  CUTLASS_VERSION="$(CUTLASS_VERSION)" bash -c "$$WHEELHOUSE_SCRIPT"

clean:
	rm -rf build/logs
