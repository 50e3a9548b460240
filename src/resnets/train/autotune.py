"""Pick the fastest CPU training format (fp32 or bf16 autocast, NCHW or channels_last) by timing it.

Which one wins depends on the CPU, not just on its feature flags: on one AVX-512-bf16 machine bf16 NCHW
trained ResNet-20 1.4x faster than fp32; on another, with the same flags, fp32 channels_last was 1.3x
faster than bf16 (docs/benchmarks.md). So, like cuDNN's benchmark mode, `precision="auto"` and an unset
`channels_last` on a CPU time a few real training steps of each candidate and keep the fastest.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .runtime import precision_name

# a candidate whose first step takes longer than this makes the search cost more than it can save
MAX_STEP_SECONDS = 2.0


@dataclass(frozen=True)
class Candidate:
    amp_dtype: torch.dtype | None
    channels_last: bool

    def __str__(self) -> str:
        return f"{precision_name(self.amp_dtype)} {'channels_last' if self.channels_last else 'NCHW'}"


def time_candidate(model: nn.Module, candidate: Candidate, batch_shape: tuple[int, ...], num_classes: int,
                   steps: int) -> float:  # fmt: skip
    """Median seconds of a training step (forward, backward, SGD update) on a throw-away copy; inf when
    the first step alone is over the time limit."""
    net = copy.deepcopy(model).train()
    fmt = torch.channels_last if candidate.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(batch_shape).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch_shape[0],))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for i in range(steps + 1):  # the first step warms up oneDNN's kernels and is not counted
        start = time.perf_counter()
        with torch.autocast(
            "cpu", dtype=candidate.amp_dtype or torch.bfloat16, enabled=candidate.amp_dtype is not None
        ):
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        if i == 0 and times[0] > MAX_STEP_SECONDS:
            return float("inf")
    return sorted(times[1:])[len(times[1:]) // 2]


def fastest_cpu_format(
    model: nn.Module,
    batch_shape: tuple[int, ...],
    num_classes: int,
    precisions: list[torch.dtype | None],
    layouts: list[bool],
    steps: int = 3,
) -> tuple[Candidate, dict[str, float]]:
    """The fastest of `precisions` x `layouts` and every candidate's measured images/s. Runs under a forked
    RNG so the training run's random streams are the same with or without the search."""
    results: dict[Candidate, float] = {}
    with torch.random.fork_rng():
        for amp in precisions:
            for channels_last in layouts:
                candidate = Candidate(amp, channels_last)
                results[candidate] = time_candidate(model, candidate, batch_shape, num_classes, steps)
    best = min(results, key=results.get)
    return best, {str(c): batch_shape[0] / t for c, t in results.items()}
