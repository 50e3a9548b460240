"""Running the whole benchmark in one process and returning one JSON-ready result."""

from __future__ import annotations

import dataclasses

import torch

from ..machine import bf16_native, describe, load_average, set_threads
from ..provenance import invocation, provenance
from ..timing import median_seconds
from .config import BenchConfig, Context
from .inference import inference_rows
from .models import nets_under_test
from .training import training_rows


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


def measure_ceilings(config: BenchConfig, device: torch.device) -> dict[str, float]:
    """fp32 (and bf16 where native) GFLOP/s of a large square matmul."""
    dtypes = {"fp32": torch.float32} | ({"bf16": torch.bfloat16} if bf16_native(device) else {})
    return {
        name: matmul_gflops(
            device,
            dtype,
            config.matmul_size,
            warmup=config.warmup,
            repeats=config.repeats,
            min_time=config.min_time,
        )
        for name, dtype in dtypes.items()
    }


def run_benchmark(config: BenchConfig) -> dict:
    """Every measurement side by side: machine, matmul ceilings, training steps, inference.

    Uses `config.threads` CPU threads (default: the cores other jobs leave idle, `machine.set_threads`):
    OpenMP threads that wait on each other at every op make all threads slow, measured 25x slower with 2
    threads than 1 on a 2-core machine running a second job.
    """
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but CUDA is not available")
    nets = nets_under_test(config)  # before any timing: a bad run fails at once
    previous_threads = torch.get_num_threads()
    set_threads(config.threads)
    try:
        load_before = load_average()
        ctx = Context(config, device, measure_ceilings(config, device))
        training = training_rows(ctx, nets) if config.training else []
        inference = inference_rows(ctx, nets)
        return {
            "provenance": provenance(invocation(), device),  # commit, dirty tree, command, machine, versions
            "machine": describe(device),
            "config": dataclasses.asdict(config),
            "load_average": {"before": load_before, "after": load_average()},
            "ceiling_gflops": ctx.ceilings,
            "training": training,
            "inference": inference,
        }
    finally:
        torch.set_num_threads(previous_threads)
