"""Facts about the machine a run computes on: its CPU, its cores, and where bf16 runs natively.

Training (precision choice, CPU threads) and the benchmarks (what a result was measured on) both read
them from here.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

BF16_CAPABILITY = (8, 0)  # Ampere and later have bf16 tensor cores; older GPUs only emulate bf16


def core_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(seconds: float = 0.3) -> float:
    """How many cores' worth of CPU time the machine spent busy over the next `seconds` (from /proc/stat;
    0.0 where that cannot be read). Called before a run starts, this is other processes' load."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return 0.0

    def sample() -> tuple[int, int]:
        ticks = [int(v) for v in stat.read_text().split("\n", 1)[0].split()[1:9]]  # user .. steal
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    if total2 <= total:
        return 0.0
    return (1 - (idle2 - idle) / (total2 - total)) * (os.cpu_count() or 1)


def free_cores() -> tuple[int, int, float]:
    """(threads to compute with, cores, cores other processes keep busy): every core this process may use,
    less the busy ones, at least 1. OpenMP threads wait for each other at every op, so a thread that shares its
    core with another process slows all of them down (docs/benchmarks.md, "A busy machine")."""
    busy, cores = busy_cores(), core_count()
    return idle_cores(busy, cores), cores, busy


def idle_cores(busy: float, cores: int) -> int:
    """Cores of `cores` that other processes' `busy` cores' worth of load leaves free, at least 1."""
    return max(1, cores - round(busy))


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
