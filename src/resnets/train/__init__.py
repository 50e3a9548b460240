"""Training: a typed config, the loop (`train_one_epoch`, `evaluate`, `fit`) and crash-safe checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import PRESETS, TrainConfig, apply_preset
from .loop import History, evaluate, fit, train_one_epoch


def train(preset: str = "default", resume: str | Path | None = None, **options: Any) -> History:
    """Train from Python: `resnets.train(model="cifar_resnet20", data="fashion-mnist", epochs=15)`."""
    return fit(apply_preset(preset, options), resume=resume)


__all__ = ["PRESETS", "History", "TrainConfig", "apply_preset", "evaluate", "fit", "train", "train_one_epoch"]
