"""What one benchmark run measures, and the shared facts (device, matmul ceilings) every measurement uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..timing import median_seconds_each


@dataclass(frozen=True)
class BenchConfig:
    """Models, sizes and timing for one benchmark; the defaults are the full benchmark. With `run`, the net
    timed is that run's model (`models` and `cifar_models` are not), at its recorded input unless
    `image_size` is given."""

    models: tuple[str, ...] = ("resnet18", "resnet50")  # ImageNet nets, compared with torchvision's
    image_size: int | None = None  # None: 224 (CIFAR-stem zoo nets: their own), or the run's crop
    batch_size: int = 32  # training batch of the ImageNet nets, and the inference throughput batch
    cifar_models: tuple[str, ...] = ("cifar_resnet20", "cifar_resnet56")  # naive vs fast training
    cifar_batch_size: int = 128
    warmup: int = 2
    repeats: int = 5
    min_time: float = 0.3  # seconds each repeat lasts at least (short calls are looped)
    matmul_size: int = 2048
    runtimes: tuple[str, ...] = ("eager", "compiled", "onnxruntime", "openvino")  # deploy runtimes timed
    training: bool = True  # False: inference only
    device: str = "cpu"
    threads: int | None = None  # CPU threads; None = every core (fewer if other jobs load the machine)
    run: str | None = None  # a run folder or its weights file: time that trained model instead of `models`

    @classmethod
    def quick(cls, **changes: object) -> BenchConfig:
        """Fewer, shorter repeats and a smaller matmul: a smoke run, not numbers to quote."""
        base = {"warmup": 1, "repeats": 2, "min_time": 0.02, "matmul_size": 512}
        return cls(**{**base, **changes})


@dataclass(frozen=True)
class Context:
    """The device and its measured fp32/bf16 matmul GFLOP/s (bf16 only where native)."""

    config: BenchConfig
    device: torch.device
    ceilings: dict[str, float] = field(default_factory=dict)

    def time(self, fn: Callable[[], object]) -> float:
        """Median seconds per call of `fn` under this run's timing settings."""
        return self.time_each([fn])[0]

    def time_each(self, fns: list[Callable[[], object]]) -> list[float]:
        """Median seconds per call of each of `fns`, measured interleaved (for side-by-side ratios)."""
        c = self.config
        return median_seconds_each(fns, self.device, warmup=c.warmup, repeats=c.repeats, min_time=c.min_time)

    def fraction_of_peak(self, macs: int, images_per_s: float, precision: str, passes: int) -> float | None:
        """Share of the matmul ceiling reached: 2 FLOPs per MAC, `passes` = 3 for a training step (fwd+bwd)."""
        ceiling = self.ceilings.get(precision)
        return None if ceiling is None else 2 * macs * passes * images_per_s / (ceiling * 1e9)
