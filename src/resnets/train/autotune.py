"""Pick the fastest CPU training format (fp32 or bf16 autocast, NCHW or channels_last) by timing it.

Which one wins depends on the CPU, not just on its feature flags: on one AVX-512-bf16 machine bf16 NCHW
trained ResNet-20 1.7x faster than fp32; on another, with the same flags, fp32 channels_last was 1.4x
faster than bf16 (docs/benchmarks.md). So, like cuDNN's benchmark mode, `precision="auto"` and an unset
`channels_last` on a CPU time a few training steps of each candidate and keep the fastest.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..timing import median_seconds_each
from .runtime import precision_name
from .step import training_step

# a candidate whose first step takes longer than this makes the search cost more than it can save
MAX_STEP_SECONDS = 2.0


@dataclass(frozen=True)
class Candidate:
    amp_dtype: torch.dtype | None
    channels_last: bool

    def __str__(self) -> str:
        return f"{precision_name(self.amp_dtype)} {'channels_last' if self.channels_last else 'NCHW'}"


def candidate_step(
    model: nn.Module, candidate: Candidate, batch_shape: tuple[int, ...], num_classes: int
) -> Callable[[], object]:
    """A training step of a throw-away copy of `model` in `candidate`'s format, on a fixed random batch."""
    net = copy.deepcopy(model).train()
    fmt = torch.channels_last if candidate.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(batch_shape).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch_shape[0],))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    return lambda: training_step(net, optimizer, x, y, amp_dtype=candidate.amp_dtype)


def fastest_cpu_format(
    model: nn.Module,
    batch_shape: tuple[int, ...],
    num_classes: int,
    precisions: list[torch.dtype | None],
    layouts: list[bool],
    steps: int = 5,
) -> tuple[Candidate, dict[str, float]]:
    """The fastest of `precisions` x `layouts` and every candidate's measured images/s (all 0 when one step
    takes over MAX_STEP_SECONDS: then the search would cost more than it can save). Each candidate gets a
    warm-up step, then `steps` timed steps, interleaved across candidates so that drifts in clock speed hit
    all alike. Runs under a forked RNG, so the run's random streams are the same with or without it."""
    with torch.random.fork_rng():
        candidates = [Candidate(amp, channels_last) for amp in precisions for channels_last in layouts]
        runs = [candidate_step(model, c, batch_shape, num_classes) for c in candidates]
        start = time.perf_counter()
        runs[0]()
        if time.perf_counter() - start > MAX_STEP_SECONDS:
            return candidates[0], {str(c): 0.0 for c in candidates}
        seconds = median_seconds_each(runs, torch.device("cpu"), warmup=1, repeats=steps, min_time=0.0)
    speeds = {str(c): batch_shape[0] / t for c, t in zip(candidates, seconds, strict=True)}
    return max(candidates, key=lambda c: speeds[str(c)]), speeds
