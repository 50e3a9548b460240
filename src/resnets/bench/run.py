"""Running the whole benchmark in one process and returning one JSON-ready result."""

from __future__ import annotations

import dataclasses

import torch

from .config import BenchConfig, Context
from .inference import inference_rows
from .machine import bf16_supported, core_count, load_average, machine_info, matmul_gflops
from .training import training_rows


def measure_ceilings(config: BenchConfig, device: torch.device) -> dict[str, float]:
    """fp32 (and bf16 where native) GFLOP/s of a large square matmul."""
    dtypes = {"fp32": torch.float32} | ({"bf16": torch.bfloat16} if bf16_supported(device) else {})
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

    Uses `config.threads` CPU threads (default: every core). With other jobs on the machine, OpenMP threads
    that wait on each other at every op make all threads slow: measured 25x slower with 2 threads than 1 on
    a 2-core machine running a second job. Ask for the idle cores only.
    """
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but CUDA is not available")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or core_count())
    try:
        load_before = load_average()
        ctx = Context(config, device, measure_ceilings(config, device))
        training = training_rows(ctx)
        inference = inference_rows(ctx)
        return {
            "machine": machine_info(device),
            "config": dataclasses.asdict(config),
            "load_average": {"before": load_before, "after": load_average()},
            "ceiling_gflops": ctx.ceilings,
            "training": training,
            "inference": inference,
        }
    finally:
        torch.set_num_threads(previous_threads)
