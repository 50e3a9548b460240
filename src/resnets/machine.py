"""Facts about the machine a run computes on: its CPU, its cores, and where bf16 runs natively.

Training (precision choice, CPU threads) and the benchmarks (what a result was measured on) both read
them from here.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import NamedTuple

import torch

BF16_CAPABILITY = (8, 0)  # Ampere and later have bf16 tensor cores; older GPUs only emulate bf16


def core_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def busy_cores(seconds: float = 0.3) -> float:
    """How many of this process's cores (its affinity mask) were busy over the next `seconds`, in cores'
    worth of CPU time (from /proc/stat's per-CPU lines; 0.0 where they cannot be read). Called before a run
    starts, this is other processes' load on the cores this process may use: a busy core it may not use is
    no reason to run fewer threads."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return 0.0
    mine = {f"cpu{c}" for c in os.sched_getaffinity(0)} if hasattr(os, "sched_getaffinity") else None

    def sample() -> tuple[int, int]:
        total = idle = 0
        for line in stat.read_text().splitlines()[1:]:
            name, *values = line.split()
            if not name.startswith("cpu"):
                break
            if mine is None or name in mine:
                ticks = [int(v) for v in values[:8]]  # user .. steal
                total, idle = total + sum(ticks), idle + ticks[3] + ticks[4]  # idle + iowait
        return total, idle

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    if total2 <= total:
        return 0.0
    return (1 - (idle2 - idle) / (total2 - total)) * (len(mine) if mine else os.cpu_count() or 1)


def free_cores() -> tuple[int, int, float]:
    """(threads to compute with, cores, cores other processes keep busy): every core this process may use,
    less the busy ones among them, at least 1. OpenMP threads wait for each other at every op, so a thread
    that shares its core with another process slows all of them down (docs/benchmarks.md, "A busy machine")."""
    busy, cores = busy_cores(), core_count()
    return idle_cores(busy, cores), cores, busy


def idle_cores(busy: float, cores: int) -> int:
    """Cores of `cores` that other processes' `busy` cores' worth of load leaves free, at least 1."""
    return max(1, cores - round(busy))


class Threads(NamedTuple):
    """A thread choice: `threads` to compute with on this process's `cores`, while other processes keep
    `busy` cores' worth of them busy (None: not measured, because the count was given)."""

    threads: int
    cores: int
    busy: float | None

    @property
    def shared(self) -> bool:
        """Other processes keep some of these cores busy (measured; False when the load was not measured)."""
        return self.busy is not None and idle_cores(self.busy, self.cores) < self.cores


_applied: Threads | None = None  # what `set_threads` last gave PyTorch in this process


def choose_threads(requested: int | None = None, processes: int = 1, measure: bool = False) -> Threads:
    """The one CPU-thread policy, decided but not applied: `requested` threads, else $OMP_NUM_THREADS when
    set, else the cores other processes leave idle, shared by the `processes` running on this machine. The
    load is measured (0.3 s) only when the count depends on it, or when `measure` asks (to know `shared`)."""
    if requested is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        requested = int(os.environ["OMP_NUM_THREADS"])
    if requested is not None and not measure:
        return Threads(max(1, requested), core_count(), None)
    idle, cores, busy = free_cores()
    threads = max(1, requested) if requested is not None else max(1, idle // max(processes, 1))
    return Threads(threads, cores, busy)


def set_threads(requested: int | None = None, processes: int = 1) -> str | None:
    """Apply the one CPU-thread policy (`choose_threads`) to PyTorch: `requested` threads, else
    $OMP_NUM_THREADS when set, else the cores other processes leave idle, shared by the `processes` running on
    this machine (a distributed job's local ones). Beside one busy process on 2 cores, 2 threads made training
    steps ~3x slower than on the idle machine and 1 thread ~1.8x (docs/benchmarks.md, "A busy machine").
    Returns why fewer threads than cores were chosen, else None."""
    global _applied
    choice = choose_threads(requested, processes)
    torch.set_num_threads(choice.threads)
    _applied = choice
    if choice.shared:  # (only a count chosen from the load is measured)
        return f"{choice.threads} CPU threads: {choice.busy:.1f} of {choice.cores} cores busy with other work"
    return None


def serving_threads(requested: int | None = None) -> Threads:
    """Threads for a model served on this CPU, with the load measured (whether a runtime's threads may
    spin-wait depends on it): `requested`, else what `set_threads` gave PyTorch in this process while PyTorch
    still runs that many (the caller's choice: `resnets predict`, a benchmark's --threads), else the policy's
    count now, never more than PyTorch's own (a caller's `torch.set_num_threads` is a choice too)."""
    if requested is None and _applied is not None and _applied.threads == torch.get_num_threads():
        if _applied.busy is not None:
            return _applied
        requested = _applied.threads
    if requested is not None:
        return choose_threads(requested, measure=True)
    choice = choose_threads(measure=True)
    return choice._replace(threads=min(choice.threads, torch.get_num_threads()))


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
