"""What the benchmark ran on, and the machine's measured matmul ceiling that model throughput is compared to."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .timing import median_seconds


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
    return platform.processor() or "unknown"


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 runs natively: CUDA's own check; on CPU the AVX512-BF16 or AMX instructions."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: other jobs on the machine skew absolute numbers."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def machine_info(device: torch.device) -> dict[str, object]:
    """The hardware and software a result was measured on."""
    return {
        "cpu": cpu_model(),
        "cores": core_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "bf16_native": bf16_supported(device),
    }


def matmul_gflops(
    device: torch.device, dtype: torch.dtype, size: int, *, warmup: int, repeats: int, min_time: float
) -> float:
    """Achieved GFLOP/s of a square `size` matmul: the practical peak of this machine in `dtype`."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = median_seconds(
        lambda: torch.mm(a, b), device, warmup=warmup, repeats=repeats, min_time=min_time
    )
    return 2 * size**3 / seconds / 1e9
