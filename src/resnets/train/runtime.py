"""Where and how a run computes: device, precision, memory format, and its place in a distributed job."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..machine import bf16_native
from .config import TrainConfig


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None for fp32
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    # fp16 only: scales the loss so small gradients survive, skips steps with inf/NaN gradients. Its state
    # (scale, growth tracker) changes every step: save `scaler.state_dict()` with the checkpoint and load it
    # on resume, or a resumed run starts from the initial scale and skips different steps.
    scaler: torch.amp.GradScaler | None = None
    compile: bool = False  # train through torch.compile (--compile, or chosen for a long CPU run)

    @property
    def cuda_graphs(self) -> bool:
        """Whether training runs as CUDA graphs: `compile` on one GPU (see `compile_for_training`)."""
        return self.compile and self.device.type == "cuda" and self.world_size == 1

    @property
    def is_main(self) -> bool:
        """Only the main process logs, shows progress and writes files."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """ "fp32", "bf16" or "fp16": the `--precision` value that selects `amp_dtype`."""
    return next(name for name, dtype in AMP_DTYPES.items() if dtype == amp_dtype)


def choose_precision(device_type: str, requested: str, native_bf16: bool) -> str:
    """The `--precision` a run uses: `requested` unless it is "auto", then bf16 where the device computes it
    natively (GPUs of compute capability 8.0+; CPUs with AVX-512 bf16 or AMX), else fp16 with a GradScaler
    on older GPUs and fp32 on other CPUs. fp16 is refused off CUDA: CPUs have no fast fp16 and no
    GradScaler. `native_bf16`: `machine.bf16_native` of the device, the one place that rule is written."""
    if requested not in AMP_DTYPES and requested != "auto":
        raise ValueError(f"unknown precision {requested!r}; choose auto, {', '.join(AMP_DTYPES)}")
    if requested == "fp16" and device_type != "cuda":
        raise ValueError(
            f"fp16 training needs a CUDA GPU (this is {device_type}); use --precision bf16 or fp32"
        )
    if requested != "auto":
        return requested
    if native_bf16:
        return "bf16"
    return "fp16" if device_type == "cuda" else "fp32"


def resolve_runtime(cfg: TrainConfig) -> Runtime:
    """Pick the device, precision and memory format for `cfg` on this machine (and this rank); on CUDA,
    also turn on cuDNN's autotuner (unless the run is deterministic) and make fp16's GradScaler."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if cfg.device == "auto":
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        else:
            device = torch.device("cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    precision = choose_precision(device.type, cfg.precision, bf16_native(device))
    if device.type == "cuda":
        set_cudnn_autotune(not cfg.deterministic)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    return Runtime(
        device, AMP_DTYPES[precision], channels_last, rank, world, scaler, compile=bool(cfg.compile)
    )


def compile_for_training(model: nn.Module, runtime: Runtime) -> nn.Module:
    """torch.compile for training; on one GPU with CUDA graphs (mode="reduce-overhead"): small images leave
    a GPU waiting on kernel launches, and replaying a recorded graph launches the whole step at once
    (ResNet-20 at 32 px on an H100: 3.0-3.6 ms a bare step against 10.5-12.9 ms eager, docs/gpu.md). Each step must then
    begin with `torch.compiler.cudagraph_mark_step_begin()`. DDP keeps the default mode (its gradient hooks
    run between the graph's kernels)."""
    return torch.compile(model, mode="reduce-overhead" if runtime.cuda_graphs else None)


def set_cudnn_autotune(enabled: bool) -> None:
    """cuDNN's benchmark mode times the convolution algorithms for each new input shape and keeps the
    fastest: a large win for fixed-size batches, but its choice may differ between runs (so off when
    deterministic)."""
    torch.backends.cudnn.benchmark = enabled


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        set_cudnn_autotune(False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
