"""Names and paths of the MLPerf Inference v3.0 submission tree
(`<division>/<submitter>/{results,compliance,measurements,systems,code}/...`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dlrm_bench.paths import scratch_path

DIVISIONS = ("closed", "open", "network")
"""network: MLPerf's Network division (LoadGen on one node, `--sut network` runs, docs/network.md)."""
SCENARIOS = ("Offline", "Server")
"""DLRM is a datacenter benchmark: Offline and Server are required, SingleStream is not a v3.0 DLRM scenario."""
BENCHMARKS = {"default": "dlrm-99", "high_accuracy": "dlrm-99.9",
              "triton": "dlrm-99", "high_accuracy_triton": "dlrm-99.9"}
TRITON_SUFFIX = "_Triton"
"""The triton config_vers are their own system, named as NVIDIA names them."""
NETWORK_SUFFIX = "_Network"
"""Runs through the network SUT (`--sut network` or `network_ranges`) are their own system: LoadGen's node and
the serving nodes."""
TESTS = ("TEST01", "TEST05")
PERF_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
ACCURACY_FILES = PERF_FILES + ("accuracy.txt", "mlperf_log_accuracy.json")
TEST01_ACCURACY_FILES = ("mlperf_log_accuracy.json", "accuracy.txt")
TEST01_FALLBACK_FILES = ("baseline_accuracy.txt", "compliance_accuracy.txt")
MEASUREMENT_FILES = ("mlperf.conf", "user.conf", "README.md")
CODE_NAME = "dlrm"
"""code/dlrm/ holds the code pointer; code/<benchmark> is a one-line file naming it (the checker follows it)."""
MAX_ACCURACY_LOG_BYTES = 10 * 1024
MAX_FILE_BYTES = 50 * 1024 * 1024


def run_sut(result: dict) -> str:
    """local, network or network_ranges: the SUT a result.json's run went through."""
    return str(result.get("sut") or result.get("settings", {}).get("sut") or "local")


def system_name(system: str, config_ver: str, sut: str = "local") -> str:
    """The system folder of a run: its system id, with _Triton for the triton config_vers and _Network for the
    network SUT."""
    return system + (TRITON_SUFFIX if config_ver.endswith("triton") else "") + \
        (NETWORK_SUFFIX if sut != "local" else "")


def default_output() -> Path:
    return scratch_path() / "submission"


@dataclass(frozen=True)
class Entry:
    """One (system, benchmark, scenario) of a submitter's tree."""

    root: Path
    """<output>/<division>/<submitter>"""
    system: str
    benchmark: str
    scenario: str

    def folder(self, kind: str) -> Path:
        """results / compliance / measurements folder of this entry."""
        return self.root / kind / self.system / self.benchmark / self.scenario

    @property
    def performance(self) -> Path:
        return self.folder("results") / "performance" / "run_1"

    @property
    def accuracy(self) -> Path:
        return self.folder("results") / "accuracy"

    def compliance(self, test: str) -> Path:
        return self.folder("compliance") / test

    def implementation_file(self, engine: str) -> Path:
        """measurements/.../<system>_<implementation>_<Scenario>.json"""
        return self.folder("measurements") / f"{self.system}_dlrm-bench-{engine}_{self.scenario}.json"


def system_file(root: Path, system: str) -> Path:
    return root / "systems" / f"{system}.json"
