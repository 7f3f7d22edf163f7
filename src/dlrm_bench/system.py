"""Detect the machine the benchmark runs on: CPU model and cores, GPU name and count."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SystemInfo:
    cpu_model: str
    cpu_cores: int
    gpu_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gpus(self) -> int:
        return len(self.gpu_names)

    @property
    def system_id(self) -> str:
        """A folder-safe name, e.g. 'H100_80GB_HBM3x1' or 'CPU_2c_Intel_Xeon_Platinum_8480C'."""
        if self.gpus:
            name = self.gpu_names[0].replace("NVIDIA ", "")
            return _safe(f"{name}x{self.gpus}")
        return _safe(f"CPU_{self.cpu_cores}c_{self.cpu_model}")

    def describe(self) -> str:
        gpu = f"{self.gpus} x {self.gpu_names[0]}" if self.gpus else "no GPU"
        return f"{self.cpu_model}, {self.cpu_cores} cores; {gpu}"


def _safe(text: str) -> str:
    text = re.sub(r"\(R\)|\(TM\)|CPU @.*$|@.*$", "", text)
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")[:60]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _gpu_names() -> tuple[str, ...]:
    try:
        import torch
    except ImportError:
        return ()
    if not torch.cuda.is_available():
        return ()
    return tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))


def detect_system() -> SystemInfo:
    """What this process can use (CUDA_VISIBLE_DEVICES and CPU affinity respected)."""
    return SystemInfo(cpu_model=_cpu_model(), cpu_cores=_cpu_cores(), gpu_names=_gpu_names())
