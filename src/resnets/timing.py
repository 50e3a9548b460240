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
    """Median seconds per call of `fn` (see `median_seconds_each`)."""
    return median_seconds_each([fn], device, warmup=warmup, repeats=repeats, min_time=min_time)[0]


def median_seconds_each(
    fns: list[Callable[[], object]], device: torch.device, *, warmup: int, repeats: int, min_time: float
) -> list[float]:
    """Median seconds per call of each of `fns`, their repeats interleaved (a, b, a, b, ...) so that drifts
    in clock speed or machine load hit all alike (in alternating order); measured one after another, the first-measured of two
    identical networks came out up to 18% slower. Each repeat loops a callable enough times to last about
    `min_time` seconds (judged from its last warm-up call), so fast calls are not lost in timer noise."""
    inner = []
    for fn in fns:
        elapsed = 0.0
        for _ in range(max(warmup, 1)):
            start = time.perf_counter()
            fn()
            _sync(device)
            elapsed = time.perf_counter() - start
        inner.append(max(1, math.ceil(min_time / max(elapsed, 1e-9))))
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        order = list(zip(fns, inner, samples, strict=True))
        for fn, n, out in order if r % 2 == 0 else order[::-1]:  # nobody always goes first
            start = time.perf_counter()
            for _ in range(n):
                fn()
            _sync(device)
            out.append((time.perf_counter() - start) / n)
    return [statistics.median(s) for s in samples]
