"""Training: a typed config, the loop (`train_one_epoch`, `evaluate`, `fit`) and crash-safe checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import PRESETS, TrainConfig, apply_preset
from .loop import evaluate, train_one_epoch
from .run import History, fit


def train(
    preset: str = "default", resume: str | Path | None = None, overwrite: bool = False, **options: Any
) -> History:
    """Train from Python: `resnets.train(model="cifar_resnet20", data="fashion-mnist", epochs=15)`.

    `resume=RUN_DIR` continues that run; `options` may then change only `TrainConfig`'s `RESUMABLE`
    settings (e.g. more `epochs`). `overwrite=True` replaces a run already in `out`."""
    if resume is not None:
        if preset != "default" or overwrite:
            raise ValueError("a resumed run keeps its recipe and folder: leave out preset and overwrite")
        return fit(resume=resume, changes=options)
    return fit(apply_preset(preset, options), overwrite=overwrite)


__all__ = ["PRESETS", "History", "TrainConfig", "apply_preset", "evaluate", "fit", "train", "train_one_epoch"]
