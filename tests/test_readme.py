"""The README runs: its Python API is importable as shown, and its examples work as written."""

from __future__ import annotations

import subprocess
import sys

import resnets


def test_resnets_train_stays_the_function_after_importing_the_subpackage() -> None:
    """`resnets.train` is the training function even after `import resnets.train.<module>` (a fresh
    interpreter, so the subpackage's modules are loaded here for the first time)."""
    code = (
        "import resnets, resnets.train.lr_find, resnets.train.checkpoint\n"
        "from resnets.train import loop\n"
        "from resnets.train.config import TrainConfig\n"
        "assert callable(resnets.train) and resnets.train.__module__ == 'resnets.train', resnets.train\n"
        "assert resnets.TrainConfig is TrainConfig and resnets.fit is loop.fit\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert callable(resnets.train) and resnets.History.__name__ == "History"
