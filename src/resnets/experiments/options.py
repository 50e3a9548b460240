"""What every experiment is told: budget, data, output folder, seed and device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BudgetName = Literal["tiny", "quick", "full"]
BUDGETS: tuple[BudgetName, ...] = ("tiny", "quick", "full")
DATA_SETS = ("fashion-mnist", "cifar10")
EXPERIMENTS = {  # name (= module) -> what it shows
    "gradients": "gradient norm per conv layer, plain vs residual twins",
    "degradation": "paper Figure 6: deeper plain nets train worse, deeper ResNets better",
    "resolution": "global average pooling makes one net run at any input size",
    "complexity": "parameters, MACs and speed of the zoo vs the paper's Tables 1 and 6",
    "variants": "v1 vs v1.5 vs v1d vs pre-activation vs ResNeXt at matched MACs",
    "shortcuts": "shortcut options A, B and C: parameters and accuracy",
}


@dataclass(frozen=True)
class ExperimentOptions:
    """The knobs shared by all experiments; each experiment maps `budget` to its own sizes."""

    budget: BudgetName = "quick"  # tiny: seconds (tests); quick: minutes on a CPU; full: a GPU run
    data: str = "fashion-mnist"
    data_root: str | None = None  # default: $RESNETS_DATA and the standard places
    out: str | None = None  # default: runs/experiments/<name>-<time>
    seed: int = 0
    device: str = "auto"
    weights: str | None = None  # resolution: evaluate these trained weights instead of training
    threads: int | None = None  # CPU threads for torch; None keeps torch's default

    def __post_init__(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, not {self.budget!r}")
        if self.data not in DATA_SETS:
            raise ValueError(f"experiments run on {' or '.join(DATA_SETS)}, not {self.data!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")

    def command(self, name: str) -> str:
        """The command line that reproduces this run."""
        parts = ["resnets experiment", name, f"--budget {self.budget}", f"--data {self.data}"]
        parts += [f"--seed {self.seed}"]
        if self.data_root:
            parts.append(f"--data-root {self.data_root}")
        if self.device != "auto":
            parts.append(f"--device {self.device}")
        if self.weights:
            parts.append(f"--weights {self.weights}")
        if self.threads:
            parts.append(f"--threads {self.threads}")
        return " ".join(parts)
