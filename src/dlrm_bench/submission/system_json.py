"""`systems/<system>.json`: every field MLPerf Inference v3.0 requires of a system description, filled from what
this machine reports, and from a small user file for what only the submitter knows (the file's template is
written on first use; any machine value can be overridden there too)."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psutil

from dlrm_bench.atomic import save_json
from dlrm_bench.errors import DataError, UserError
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
STATUSES = ("available", "preview", "rdi")
SYSTEM_TYPES = ("datacenter", "datacenter,edge")
"""DLRM is a datacenter benchmark: an edge-only system cannot submit it."""
TEMPLATE_COMMENT = ("Facts about the system under test that only you know, for MLPerf's systems/<system>.json. "
                    "system_name is required (e.g. 'ACME 1U server (2x H100-SXM-80GB)'); status: available, preview "
                    "or rdi; system_type: datacenter. Any machine-detected field (host_processor_model_name, "
                    "accelerator_memory_capacity, ...) may be given here to override it.")


def _size(nbytes: float) -> str:
    tb = nbytes / 1e12
    return f"{tb:.1f} TB" if tb >= 1 else f"{round(nbytes / 2**30)} GB"


def _cpuinfo() -> tuple[int, int]:
    """(sockets, physical cores per socket) from /proc/cpuinfo, else psutil."""
    sockets, cores = set(), 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                sockets.add(value.strip())
            elif key.strip() == "cpu cores":
                cores = int(value)
    except (OSError, ValueError):
        pass
    n = max(len(sockets), 1)
    return n, cores or max((psutil.cpu_count(logical=False) or 1) // n, 1)


def _caches() -> str:
    parts = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
            parts.append(f"L{(index / 'level').read_text().strip()}{suffix} {(index / 'size').read_text().strip()}")
        except OSError:
            continue
    return ", ".join(parts)


def _os_name() -> str:
    try:
        release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        name = release.get("PRETTY_NAME", "").strip('"')
    except OSError:
        name = ""
    return f"{name or platform.system()} (kernel {platform.release()})"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict[str, str]:
    """Driver version, memory and max SM clock of GPU 0 (empty without nvidia-smi)."""
    if not shutil.which("nvidia-smi"):
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout
        driver, memory, clock = (v.strip() for v in out.splitlines()[0].split(","))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {}
    return {"driver": driver, "memory": memory, "clock": clock}


def machine_facts(system: SystemInfo, storage: Path) -> dict[str, Any]:
    """The fields this machine can report: CPU, memory, storage of `storage`, GPUs, OS and software versions."""
    sockets, cores = _cpuinfo()
    freq = psutil.cpu_freq()
    smi = _nvidia_smi() if system.gpus else {}
    torch_version = _version("torch") or "?"
    framework = [f"PyTorch {torch_version}"] + [f"OpenAI Triton {v}" for v in [_version("triton")] if v and system.gpus]
    software = [f"Python {platform.python_version()}", f"MLPerf LoadGen {_version('mlcommons-loadgen')}",
                f"numpy {_version('numpy')}", f"scikit-learn {_version('scikit-learn')}"]
    software += [f"NVIDIA driver {smi['driver']}"] if smi.get("driver") else []
    return {
        "host_processor_model_name": system.cpu_model, "host_processors_per_node": sockets,
        "host_processor_core_count": cores, "host_processor_frequency": f"{freq.max:.0f} MHz" if freq and freq.max
        else "", "host_processor_caches": _caches(), "host_memory_capacity": _size(psutil.virtual_memory().total),
        "host_storage_capacity": _size(shutil.disk_usage(storage).total), "operating_system": _os_name(),
        "accelerators_per_node": system.gpus, "accelerator_model_name": system.gpu_names[0] if system.gpus else "N/A",
        "accelerator_memory_capacity": smi.get("memory", "") if system.gpus else "N/A",
        "accelerator_frequency": smi.get("clock", "") if system.gpus else "N/A",
        "framework": ", ".join(framework), "other_software_stack": ", ".join(software)}


def read_user_file(path: Path) -> dict[str, Any]:
    """The user's system facts; on first use write the template there and stop, saying what to fill in."""
    if not path.exists():
        save_json(path, {"_comment": TEMPLATE_COMMENT, **USER_FIELDS})
        raise UserError(f"{path}: wrote the template of the system facts only you know; fill in system_name "
                        f"(and the other fields that apply), then run stage-results again")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object of system fields")
    unknown = [k for k in data if not k.startswith("_") and k not in REQUIRED_FIELDS]
    if unknown:
        raise DataError(f"{path}: unknown field '{unknown[0]}': expected fields of MLPerf's system description "
                        f"({', '.join(USER_FIELDS)}, or a machine field to override)")
    for key, allowed in (("status", STATUSES), ("system_type", SYSTEM_TYPES)):
        if str(data.get(key, USER_FIELDS[key])).lower() not in allowed:
            raise DataError(f"{path}: {key} is '{data.get(key)}', expected one of {', '.join(allowed)}")
    if not str(data.get("system_name", "")).strip():
        raise DataError(f"{path}: system_name is empty: name the system under test (e.g. 'ACME 1U (1x H100)')")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def system_description(user: dict[str, Any], machine: dict[str, Any], division: str, submitter: str,
                       triton: bool) -> dict[str, Any]:
    """The systems/<system>.json of one system folder: exactly the required fields, the user's values winning."""
    merged = {**USER_FIELDS, **machine, **user, "division": division, "submitter": submitter}
    merged["status"] = str(merged["status"]).lower()
    if triton:
        merged["system_name"] = f"{merged['system_name']} (Triton Inference Server)"
        merged["framework"] = f"{merged['framework']}, Triton Inference Server"
    return {key: merged[key] for key in sorted(REQUIRED_FIELDS)}


def blank_fields(description: dict[str, Any]) -> list[str]:
    """Fields left empty: allowed by the checker, but a reader of the submission will ask."""
    return [k for k, v in description.items() if v == "" and k not in ("hw_notes", "sw_notes")]
