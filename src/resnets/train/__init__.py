"""Training: a typed config, the loop (`train_one_epoch`, `evaluate`, `fit`) and crash-safe checkpoints. The
package is callable: `resnets.train(model=..., epochs=...)` runs `train` below."""

from __future__ import annotations

import inspect
import sys
import types
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


class _CallableModule(types.ModuleType):
    """This package, callable as `train`: `resnets.train(...)` trains (the README's API) while `resnets.train`
    stays the package, so `import resnets.train.lr_find as lf` and `resnets.train.loop` work as for any other
    package (a function bound to the same name would hide them)."""

    def __call__(self, *args: Any, **kwargs: Any) -> History:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(train)  # help() and IDEs show train's parameters for resnets.train(...)

__all__ = ["PRESETS", "History", "TrainConfig", "apply_preset", "evaluate", "fit", "train", "train_one_epoch"]
