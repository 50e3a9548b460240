"""Training budgets and the `fit` call shared by the experiments that train networks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..train import History, TrainConfig, fit
from .options import ExperimentOptions


@dataclass(frozen=True)
class TrainBudget:
    """How much data and how many epochs one training run of an experiment gets."""

    epochs: int
    limit: int | None  # training images (balanced over classes); None = all
    test_limit: int | None  # test images; None = all
    batch_size: int
    image_size: int | None = None  # None = the data's own size

    @property
    def train_images(self) -> int:
        """Images behind a final-epoch training error (with no limit: 50,000, the smaller full set)."""
        return self.limit or 50_000

    def describe(self) -> str:
        images = "all" if self.limit is None else f"{self.limit:,}"
        tests = "all" if self.test_limit is None else f"{self.test_limit:,}"
        size = "native" if self.image_size is None else f"{self.image_size} px"
        return (
            f"{self.epochs} epoch(s) on {images} training images (batch {self.batch_size}, {size}), "
            f"tested on {tests} test images; SGD + Nesterov, one-cycle LR (peak 0.1 x batch/128), "
            "weight decay 5e-4, crop + flip augmentation"
        )


def train(options: ExperimentOptions, budget: TrainBudget, out: Path, model: str, **changes: Any) -> History:
    """Train `model` with the experiment's one recipe; `changes` are extra TrainConfig fields (e.g. shortcut)."""
    cfg = TrainConfig(
        model=model,
        data=options.data,
        data_root=options.data_root,
        epochs=budget.epochs,
        batch_size=budget.batch_size,
        limit=budget.limit,
        test_limit=budget.test_limit,
        image_size=budget.image_size,
        seed=options.seed,
        device=options.device,
        out=str(out),
        quiet=True,
        workers=0,
        **changes,
    )
    return fit(cfg)


def final_row(label: str, history: History) -> dict[str, Any]:
    """The last epoch's errors and the run's time, as one row of an experiment's table."""
    last = history.epochs[-1]
    return {
        "model": label,
        "train_error": 1 - last["train_acc"],
        "test_error": 1 - last["test_acc"],
        "test_acc": last["test_acc"],
        "seconds": history.seconds,
        "test_images": int(history.final.confusion.sum()),
    }
