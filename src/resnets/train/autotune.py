"""Pick the fastest CPU training format (fp32 or bf16 autocast, NCHW or channels_last) by timing it.

Which one wins depends on the CPU, not just on its feature flags: on one AVX-512-bf16 machine bf16 NCHW
trained ResNet-20 1.7x faster than fp32; on another, with the same flags, fp32 channels_last was 1.4x
faster than bf16 (docs/benchmarks.md). So, like cuDNN's benchmark mode, `precision="auto"` and an unset
`channels_last` on a CPU time a few training steps of each candidate and keep the fastest.
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..files import atomic_write_text
from ..machine import cpu_has_bf16, cpu_model
from ..models import create_model
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
    model: nn.Module,
    candidate: Candidate,
    batch_shape: tuple[int, ...],
    num_classes: int,
    compiled: bool = False,
) -> Callable[[], object]:
    """A training step of a throw-away copy of `model` in `candidate`'s format (under `torch.compile` when
    `compiled`), on a fixed random batch."""
    net = copy.deepcopy(model).train()
    fmt = torch.channels_last if candidate.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(batch_shape).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch_shape[0],))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    step_net = torch.compile(net) if compiled else net
    return lambda: training_step(step_net, optimizer, x, y, amp_dtype=candidate.amp_dtype)


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


REFERENCE_BATCH = (64, 3, 32, 32)  # the per-machine measurement: CIFAR ResNet-20, a typical small-image step


def machine_format(
    precisions: list[torch.dtype | None], layouts: list[bool], cache: Path
) -> tuple[Candidate, dict[str, float]]:
    """The fastest of `precisions` x `layouts` on this machine for a reference step (CIFAR ResNet-20, batch 64,
    32 px), measured once per CPU model, torch version and thread count (a second or two) and cached in
    `cache`, so that runs too short or too large to time their own model still get this CPU's faster format
    rather than one guessed from its feature flags."""
    key = f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        known = {}  # a damaged cache is measured again
    if not isinstance(known.get(key), dict) or not all(
        str(Candidate(p, c)) in known[key] for p in precisions for c in layouts
    ):
        reference = create_model("cifar_resnet20")
        _, speeds = fastest_cpu_format(reference, REFERENCE_BATCH, 10, [None, torch.bfloat16] if cpu_has_bf16()
                                       else [None], [False, True], steps=3)  # fmt: skip
        known[key] = speeds
        with contextlib.suppress(OSError):  # a read-only cache only costs measuring again next time
            atomic_write_text(cache, json.dumps(known, indent=1))
    speeds = known[key]
    allowed = [Candidate(p, c) for p in precisions for c in layouts]
    return max(allowed, key=lambda c: speeds.get(str(c), 0.0)), speeds


# Training shorter than this (estimated from the format search) never compiles by default: on a 2-core AMD
# EPYC, compiling the training step of cifar_resnet20/56 took 37-58 s and made it 0.97-1.02x as fast (1.14x
# after 41 s on an Intel Xeon), docs/benchmarks.md "Does torch.compile pay", so only long runs measure it.
COMPILE_MIN_SECONDS = 30 * 60


@dataclass(frozen=True)
class CompileTiming:
    eager_img_s: float
    compiled_img_s: float
    compile_s: float  # the first compiled call: tracing and code generation

    def pays(self, images: int) -> bool:
        """Whether compiling saves at least twice what it costs over `images` training images (twice: a
        margin for the timing's noise and the recompiles a run still meets, e.g. on resuming)."""
        saved = images / self.eager_img_s - images / self.compiled_img_s
        return saved >= 2 * self.compile_s


def time_compiled(
    model: nn.Module, candidate: Candidate, batch_shape: tuple[int, ...], num_classes: int, steps: int = 5
) -> CompileTiming:
    """`candidate`'s training step eager and under `torch.compile`, interleaved medians of `steps` steps,
    and the seconds the compile took (the run's own compile afterwards may find part of it in Inductor's
    cache). Under a forked RNG, like the format search."""
    with torch.random.fork_rng():
        eager = candidate_step(model, candidate, batch_shape, num_classes)
        compiled = candidate_step(model, candidate, batch_shape, num_classes, compiled=True)
        start = time.perf_counter()
        compiled()
        compile_s = time.perf_counter() - start
        seconds = median_seconds_each(
            [eager, compiled], torch.device("cpu"), warmup=1, repeats=steps, min_time=0.0
        )
    return CompileTiming(batch_shape[0] / seconds[0], batch_shape[0] / seconds[1], compile_s)
