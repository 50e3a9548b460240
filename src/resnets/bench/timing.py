"""Timing one callable: warm up, then the median of several repeats, each long enough to be measurable."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(
    fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int, min_time: float
) -> float:
    """Median seconds per call of `fn`. Each repeat loops `fn` enough times to last about `min_time`
    seconds (judged from the last warm-up call), so fast calls are not lost in timer noise."""
    elapsed = 0.0
    for _ in range(max(warmup, 1)):
        start = time.perf_counter()
        fn()
        _sync(device)
        elapsed = time.perf_counter() - start
    inner = max(1, math.ceil(min_time / max(elapsed, 1e-9)))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        _sync(device)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)
