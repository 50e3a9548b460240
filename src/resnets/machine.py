"""Facts about the machine a run computes on: its CPU, its cores, and where bf16 runs natively.

Training (precision choice, CPU threads) and the benchmarks (what a result was measured on) both read
them from here.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

BF16_CAPABILITY = (8, 0)  # Ampere and later have bf16 tensor cores; older GPUs only emulate bf16


def core_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or the platform's processor string elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_has_bf16() -> bool:
    """AVX-512 bf16 or AMX: the CPU computes bf16 natively (without them bf16 autocast is slower than fp32)."""
    checks = (
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return any(check is not None and check() for check in checks)


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    """The GPU's compute capability (major, minor), or None for a device that is not a CUDA GPU."""
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: compute capability 8.0+ on CUDA (PyTorch's
    `is_bf16_supported()` also says yes on a T4 or V100, which only emulate it), AVX-512 bf16 or AMX on a CPU."""
    if device.type == "cuda":
        return cuda_capability(device) >= BF16_CAPABILITY
    return device.type == "cpu" and cpu_has_bf16()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other jobs on the machine skew absolute numbers."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def describe(device: torch.device) -> dict[str, object]:
    """The hardware and software a result was measured on."""
    return {
        "cpu": cpu_model(),
        "cores": core_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "capability": cuda_capability(device),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "bf16_native": bf16_native(device),
    }
