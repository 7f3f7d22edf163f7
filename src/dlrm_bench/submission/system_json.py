"""`systems/<system>.json`: every field MLPerf Inference v3.0 requires of a system description, filled from what
this machine reports, and from a small user file for what only the submitter knows (the file's template is
written on first use; any machine value can be overridden there too)."""

from __future__ import annotations

import importlib.metadata
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil

from dlrm_bench.atomic import save_json
from dlrm_bench.errors import DataError, UserError
from dlrm_bench.json_files import read_json_object
from dlrm_bench.system import SystemInfo

REQUIRED_FIELDS = (
    "division", "submitter", "status", "system_name", "number_of_nodes", "host_processor_model_name",
    "host_processors_per_node", "host_processor_core_count", "host_memory_capacity", "host_storage_capacity",
    "host_storage_type", "accelerators_per_node", "accelerator_model_name", "accelerator_memory_capacity",
    "framework", "operating_system", "system_type", "other_software_stack", "host_processor_frequency",
    "host_processor_caches", "host_memory_configuration", "host_processor_interconnect", "host_networking",
    "host_networking_topology", "accelerator_frequency", "accelerator_host_interconnect", "accelerator_interconnect",
    "accelerator_interconnect_topology", "accelerator_memory_configuration", "accelerator_on-chip_memories",
    "cooling", "hw_notes", "sw_notes")
"""The v3.0 submission checker's SYSTEM_DESC_REQUIRED_FIELDS and SYSTEM_DESC_REQUIED_FIELDS_SINCE_V1."""
USER_FIELDS = {
    "system_name": "", "status": "available", "system_type": "datacenter", "number_of_nodes": 1,
    "host_storage_type": "", "host_memory_configuration": "", "host_processor_interconnect": "",
    "host_networking": "", "host_networking_topology": "", "accelerator_host_interconnect": "",
    "accelerator_interconnect": "", "accelerator_interconnect_topology": "", "accelerator_memory_configuration": "",
    "accelerator_on-chip_memories": "", "cooling": "", "hw_notes": "", "sw_notes": ""}
"""What only the submitter knows, with the template's values."""
NETWORK_FIELDS = (
    "network_type", "network_media", "network_rate", "nic_loadgen", "number_nic_loadgen",
    "net_software_stack_loadgen", "network_protocol", "number_connections", "nic_sut", "number_nic_sut",
    "net_software_stack_sut", "network_topology")
"""The v3.0 checker's SYSTEM_DESC_REQUIRED_FIELDS_NETWORK_MODE besides is_network: required of a system over the
network (the network division), from the user file."""
USER_FIELDS.update({name: "" for name in NETWORK_FIELDS})
STATUSES = ("available", "preview", "rdi")
SYSTEM_TYPES = ("datacenter", "datacenter,edge")
"""DLRM is a datacenter benchmark: an edge-only system cannot submit it."""
TEMPLATE_COMMENT = ("Facts about the system under test that only you know, for MLPerf's systems/<system>.json. "
                    "system_name is required (e.g. 'ACME 1U server (2x H100-SXM-80GB)'); status: available, preview "
                    "or rdi; system_type: datacenter. Any machine-detected field (host_processor_model_name, "
                    "accelerator_memory_capacity, ...) may be given here to override it.")


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e12:.1f} TB" if nbytes >= 1e12 else f"{round(nbytes / 2**30)} GB"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _cpu_topology() -> tuple[int, int]:
    """(sockets, physical cores per socket) from /proc/cpuinfo, else psutil."""
    fields = [line.partition(":")[::2] for line in _read(Path("/proc/cpuinfo")).splitlines()]
    sockets = len({v.strip() for k, v in fields if k.strip() == "physical id"}) or 1
    cores = next((int(v) for k, v in fields if k.strip() == "cpu cores" and v.strip().isdigit()), 0)
    return sockets, cores or max((psutil.cpu_count(logical=False) or 1) // sockets, 1)


def _caches() -> str:
    """'L1d 48K, L1i 32K, L2 2048K, L3 ...' of CPU 0."""
    indexes = sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"))
    kinds = {"Data": "d", "Instruction": "i"}
    return ", ".join(f"L{_read(i / 'level')}{kinds.get(_read(i / 'type'), '')} {_read(i / 'size')}" for i in indexes)


def _os_name() -> str:
    release = dict(line.split("=", 1) for line in _read(Path("/etc/os-release")).splitlines() if "=" in line)
    return f"{release.get('PRETTY_NAME', '').strip(chr(34)) or platform.system()} (kernel {platform.release()})"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> list[str]:
    """[driver version, memory, max SM clock] of GPU 0 (empty without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    values = [v.strip() for v in (out.splitlines() or [""])[0].split(",")]
    return values if len(values) == 3 else []


def machine_facts(system: SystemInfo, storage: Path) -> dict[str, Any]:
    """The fields this machine can report: CPU, memory, storage of `storage`, GPUs, OS and software versions."""
    sockets, cores = _cpu_topology()
    freq = psutil.cpu_freq()
    driver, gpu_memory, gpu_clock = (_nvidia_smi() if system.gpus else []) or ["", "", ""]
    triton = _version("triton") if system.gpus else None
    software = [f"Python {platform.python_version()}", f"MLPerf LoadGen {_version('mlcommons-loadgen')}",
                f"numpy {_version('numpy')}", f"scikit-learn {_version('scikit-learn')}"]
    return {
        "host_processor_model_name": system.cpu_model, "host_processors_per_node": sockets,
        "host_processor_core_count": cores, "host_processor_frequency": f"{freq.max:.0f} MHz" if freq and freq.max
        else "", "host_processor_caches": _caches(), "host_memory_capacity": _size(psutil.virtual_memory().total),
        "host_storage_capacity": _size(shutil.disk_usage(storage).total), "operating_system": _os_name(),
        "accelerators_per_node": system.gpus, "accelerator_model_name": system.gpu_names[0] if system.gpus else "N/A",
        "accelerator_memory_capacity": gpu_memory if system.gpus else "N/A",
        "accelerator_frequency": gpu_clock if system.gpus else "N/A",
        "framework": f"PyTorch {_version('torch')}" + (f", OpenAI Triton {triton}" if triton else ""),
        "other_software_stack": ", ".join(software + ([f"NVIDIA driver {driver}"] if driver else []))}


def read_user_file(path: Path) -> dict[str, Any]:
    """The user's system facts; on first use write the template there and stop, saying what to fill in."""
    if not path.exists():
        save_json(path, {"_comment": TEMPLATE_COMMENT, **USER_FIELDS})
        raise UserError(f"{path}: wrote the template of the system facts only you know; fill in system_name "
                        f"(and the other fields that apply), then run stage-results again")
    data = read_json_object(path, "system file")
    unknown = [k for k in data if not k.startswith("_") and k not in REQUIRED_FIELDS and k not in NETWORK_FIELDS]
    if unknown:
        raise DataError(f"{path}: unknown field '{unknown[0]}': expected fields of MLPerf's system description "
                        f"({', '.join(USER_FIELDS)}, or a machine field to override)")
    for problem in value_problems(data, path):
        raise DataError(problem)
    if not str(data.get("system_name", "")).strip():
        raise DataError(f"{path}: system_name is empty: name the system under test (e.g. 'ACME 1U (1x H100)')")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def value_problems(data: dict[str, Any], where: Path) -> list[str]:
    """status and system_type values a v3.0 DLRM submission cannot have."""
    return [f"{where}: {key} is '{data[key]}', expected one of {', '.join(allowed)}"
            for key, allowed in (("status", STATUSES), ("system_type", SYSTEM_TYPES))
            if key in data and str(data[key]).lower() not in allowed]


def system_description(user: dict[str, Any], machine: dict[str, Any], division: str, submitter: str,
                       triton: bool, network: bool = False) -> dict[str, Any]:
    """The systems/<system>.json of one system folder: exactly the required fields (with the network fields for a
    system over the network), the user's values winning; is_network says which ("True"/"False", as the checker
    reads it)."""
    merged = {**USER_FIELDS, **machine, **user, "division": division, "submitter": submitter,
              "is_network": "True" if network else "False"}
    merged["status"] = str(merged["status"]).lower()
    if triton:
        merged["system_name"] = f"{merged['system_name']} (Triton Inference Server)"
        merged["framework"] = f"{merged['framework']}, Triton Inference Server"
    keys = (*REQUIRED_FIELDS, "is_network", *(NETWORK_FIELDS if network else ()))
    return {key: merged[key] for key in sorted(keys)}


def blank_fields(description: dict[str, Any]) -> list[str]:
    """Fields left empty: allowed by the checker, but a reader of the submission will ask."""
    return [k for k, v in description.items() if v == "" and k not in ("hw_notes", "sw_notes")]
