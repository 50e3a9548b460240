"""What every experiment is told: budget, data, output folder, seeds and device."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from typing import Literal

BudgetName = Literal["tiny", "quick", "cpu", "full"]
# tiny: seconds (tests; numbers mean nothing); quick: minutes on a CPU, one seed; cpu: sized to resolve each
# claim on a 2-core CPU in about 30 minutes with 3 seeds; full: a GPU run
BUDGETS: tuple[BudgetName, ...] = ("tiny", "quick", "cpu", "full")
DEFAULT_SEEDS = {"cpu": 3}  # the other budgets: 1
DATA_SETS = ("fashion-mnist", "cifar10")
EXPERIMENTS = {  # name (= module) -> what it shows
    "gradients": "gradient norm per conv layer, plain vs residual twins",
    "degradation": "paper Figure 6: deeper plain nets train worse, deeper ResNets better",
    "responses": "paper Figure 7: std of each block's response, plain vs residual twins",
    "resolution": "global average pooling makes one net run at any input size",
    "complexity": "parameters, MACs and speed of the zoo vs the paper's Tables 1 and 6",
    "variants": "v1 vs v1.5 vs v1d vs pre-activation vs ResNeXt at matched MACs",
    "shortcuts": "shortcut options A, B and C: parameters and error (paper Table 3's ordering)",
}
# The paper makes these claims on CIFAR-10: the cpu and full budgets run them there unless --data says otherwise
# (the tiny and quick smoke budgets default to Fashion-MNIST, which installs in seconds)
CIFAR_CLAIMS = frozenset({"degradation", "responses", "variants", "shortcuts"})


@dataclass(frozen=True)
class ExperimentOptions:
    """The knobs shared by all experiments; each experiment maps `budget` to its own sizes."""

    budget: BudgetName = "quick"
    data: str | None = (
        None  # default: cifar10 for CIFAR claims at the cpu and full budgets, else fashion-mnist
    )
    data_root: str | None = None  # default: $RESNETS_DATA and the standard places
    out: str | None = None  # default: runs/experiments/<name>-<time>
    seed: int = 0  # the first seed; the others follow it (seed, seed + 1, ...)
    seeds: int | None = None  # how many seeds; default DEFAULT_SEEDS[budget], else 1
    device: str = "auto"
    weights: str | None = None  # resolution: evaluate these trained weights instead of training
    threads: int | None = None  # CPU threads for torch; None keeps torch's default

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, not {self.budget!r}")
        if self.data is not None and self.data not in DATA_SETS:
            raise ValueError(f"experiments run on {' or '.join(DATA_SETS)}, not {self.data!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.seeds is not None and self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")

    def resolved(self, name: str) -> ExperimentOptions:
        """These options with the data set and the number of seeds that `name` at this budget defaults to."""
        cifar = name in CIFAR_CLAIMS and self.budget in ("cpu", "full")
        return replace(
            self,
            data=self.data or ("cifar10" if cifar else "fashion-mnist"),
            seeds=self.seeds or DEFAULT_SEEDS.get(self.budget, 1),
        )

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds or 1)]

    def command(self, name: str) -> str:
        """The command line that reproduces this run (of resolved options)."""
        parts = ["resnets", "experiment", name, "--budget", self.budget, "--data", str(self.data)]
        parts += ["--seed", str(self.seed), "--seeds", str(self.seeds or 1)]
        for flag, value in (
            ("--data-root", self.data_root),
            ("--weights", self.weights),
            ("--out", self.out),
        ):
            if value:
                parts += [flag, value]
        if self.device != "auto":
            parts += ["--device", self.device]
        if self.threads:
            parts += ["--threads", str(self.threads)]
        return shlex.join(parts)
