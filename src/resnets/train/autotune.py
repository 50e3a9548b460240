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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..files import atomic_write_text
from ..machine import bf16_native, cpu_model, free_cores, idle_cores
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
    takes over MAX_STEP_SECONDS: then the search would cost more than it can save, and the format returned
    is `known_good_format`'s). Each candidate gets a warm-up step, then `steps` timed steps, interleaved
    across candidates so that drifts in clock speed hit all alike. Runs under a forked RNG, so the run's
    random streams are the same with or without it."""
    with torch.random.fork_rng():
        candidates = [Candidate(amp, channels_last) for amp in precisions for channels_last in layouts]
        runs = [candidate_step(model, c, batch_shape, num_classes) for c in candidates]
        start = time.perf_counter()
        runs[0]()
        if time.perf_counter() - start > MAX_STEP_SECONDS:
            return known_good_format(precisions, layouts), {str(c): 0.0 for c in candidates}
        seconds = median_seconds_each(runs, torch.device("cpu"), warmup=1, repeats=steps, min_time=0.0)
    speeds = {str(c): batch_shape[0] / t for c, t in zip(candidates, seconds, strict=True)}
    return max(candidates, key=lambda c: speeds[str(c)]), speeds


CPU = torch.device("cpu")


def known_good_format(precisions: list[torch.dtype | None], layouts: list[bool]) -> Candidate:
    """The format to train in when none could be timed: bf16 where this CPU computes it natively
    (`machine.bf16_native`, the rule `precision="auto"` follows), else fp32; channels_last, which beat NCHW
    in either precision on both CPUs of docs/benchmarks.md. Each only where `precisions` / `layouts` allow."""
    preferred = torch.bfloat16 if bf16_native(CPU) else None
    return Candidate(
        preferred if preferred in precisions else precisions[0], True if True in layouts else layouts[0]
    )


@dataclass(frozen=True)
class Ranking:
    """A machine's images/s per format for the reference step, and when and under what load it was timed.
    Entries cached by earlier versions hold only the speeds (their time and load are None)."""

    speeds: dict[str, float]
    measured_at: float | None = None  # unix time
    busy_cores: float | None = None  # cores' worth of other processes' load (the busier of before / after)
    cores: int | None = None
    threads: int | None = None  # torch threads the steps ran on

    @property
    def provisional(self) -> bool:
        """Timed with fewer idle cores than threads: other work slowed it, maybe unevenly across formats."""
        if self.busy_cores is None or self.cores is None or self.threads is None:
            return False
        return idle_cores(self.busy_cores, self.cores) < self.threads

    def usable(self, candidates: list[Candidate]) -> bool:
        """Every format measured (none 0: a step too slow to time) and every one of `candidates` in it."""
        return all(v > 0 for v in self.speeds.values()) and all(
            self.speeds.get(str(c), 0.0) > 0 for c in candidates
        )

    @classmethod
    def from_json(cls, entry: object) -> Ranking | None:
        """A cache entry: {"speeds": {...}, "measured_at": ...} or an earlier version's bare speeds; None
        for anything else."""
        if not isinstance(entry, dict):
            return None
        try:
            if "speeds" not in entry:
                return cls({str(k): float(v) for k, v in entry.items()})
            return cls(**{**entry, "speeds": {str(k): float(v) for k, v in entry["speeds"].items()}})
        except (TypeError, ValueError, AttributeError):
            return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def age_text(seconds: float) -> str:
    """How long ago, in the unit that reads best: "40 s", "12 min", "5 h", "3 days"."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 1.5 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{max(seconds, 0):.0f} s"


@dataclass(frozen=True)
class MachineFormat:
    """`machine_format`'s answer: the format, the ranking it came from (None when nothing could be timed
    and `best` is `known_good_format`'s) and whether that ranking was measured just now."""

    best: Candidate
    ranking: Ranking | None
    fresh: bool

    @property
    def speeds(self) -> dict[str, float]:
        return self.ranking.speeds if self.ranking else {}

    def describe(self, now: float | None = None) -> str:
        """Where the choice came from, for the log: "measured now", "cached 3 days ago", provisional, or not
        timed at all."""
        if self.ranking is None:
            why = "native bf16" if self.best.amp_dtype == torch.bfloat16 else "no native bf16"
            return (f"not timed: a step took over {MAX_STEP_SECONDS:.0f} s (a busy machine); this CPU's "
                    f"known-good format instead ({why}), timed again next run")  # fmt: skip
        r = self.ranking
        if self.fresh:
            text = "measured now"
        elif r.measured_at is None:
            text = "cached, age unknown"
        else:
            text = f"cached {age_text((time.time() if now is None else now) - r.measured_at)} ago"
        if r.provisional:
            text += (f", provisional: {r.busy_cores:.1f} of {r.cores} cores were busy with other work; "
                     "timed again on a quieter run")  # fmt: skip
        return text


REFERENCE_BATCH = (64, 3, 32, 32)  # the per-machine measurement: CIFAR ResNet-20, a typical small-image step


def machine_key() -> str:
    """The cache key of this machine's ranking: CPU model, torch version and thread count."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def measure_machine(
    precisions: list[torch.dtype | None], before: tuple[int, int, float] | None = None
) -> Ranking:
    """Time the reference step in fp32 (and bf16 where native, and any of `precisions`), NCHW and
    channels_last, recording the time and the other processes' load before and after (`before`: a
    `free_cores()` sample just taken)."""
    native = [torch.bfloat16] if bf16_native(CPU) else []
    reference = list(dict.fromkeys([None, *native, *precisions]))
    before = before or free_cores()
    _, speeds = fastest_cpu_format(create_model("cifar_resnet20"), REFERENCE_BATCH, 10, reference,
                                   [False, True], steps=3)  # fmt: skip
    after = free_cores()
    return Ranking(speeds, time.time(), max(before[2], after[2]), before[1], torch.get_num_threads())


def read_rankings(cache: Path) -> dict[str, Any]:
    """The cache file's entries; {} for a missing or damaged file (then measured again)."""
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def machine_format(precisions: list[torch.dtype | None], layouts: list[bool], cache: Path) -> MachineFormat:
    """The fastest of `precisions` x `layouts` on this machine for a reference step (CIFAR ResNet-20, batch 64,
    32 px), measured once per CPU model, torch version and thread count (a second or two) and cached in
    `cache`, so that runs too short or too large to time their own model still get this CPU's faster format
    rather than one guessed from its feature flags. A measurement that timed nothing (or not every format)
    is never cached; one taken with fewer idle cores than threads is provisional, timed again on a later run
    that finds the machine quiet. With nothing timed, `known_good_format`."""
    allowed = [Candidate(p, c) for p in precisions for c in layouts]
    known = read_rankings(cache)
    key = machine_key()
    cached = Ranking.from_json(known.get(key))
    if cached is not None and not cached.usable(allowed):
        cached = None  # zeros cached by earlier versions, or a format this run allows was never timed
    measured = measure_if_due(cached, precisions, allowed)
    if measured is not None:
        known[key] = measured.to_json()
        with contextlib.suppress(OSError):  # a read-only cache only costs measuring again next time
            atomic_write_text(cache, json.dumps(known, indent=1))
    ranking = measured or cached
    if ranking is None:
        return MachineFormat(known_good_format(precisions, layouts), None, False)
    return MachineFormat(max(allowed, key=lambda c: ranking.speeds[str(c)]), ranking, measured is not None)


def measure_if_due(
    cached: Ranking | None, precisions: list[torch.dtype | None], allowed: list[Candidate]
) -> Ranking | None:
    """A new ranking to cache in place of `cached` (None: there is none): measured when there is none, or
    when it is provisional and the machine is now quiet. None when not measured, when the measurement did not
    time every format, or when it is provisional again (a provisional `cached` stays)."""
    if cached is not None and not cached.provisional:
        return None
    now = free_cores()
    if cached is not None and now[0] < torch.get_num_threads():
        return None  # still busy: a new measurement would be provisional too
    measured = measure_machine(precisions, now)
    if not measured.usable(allowed) or (cached is not None and measured.provisional):
        return None
    return measured


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
