"""Experiments that show why ResNets work: each measures on real data and writes a report with a verdict."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .options import BUDGETS, DATA_SETS, EXPERIMENTS, ExperimentOptions

if TYPE_CHECKING:
    from .report import Outcome


def run_experiment(name: str, options: ExperimentOptions) -> Outcome:
    """Run one experiment by name; its report folder is `options.out` or runs/experiments/<name>-<time>.
    Unset data and seeds take the budget's defaults (`ExperimentOptions.resolved`). Each experiment's module is imported only when it runs, so the command line starts fast."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    from ..machine import set_threads

    set_threads(options.threads)
    return import_module(f".{name}", __name__).run(options.resolved(name))


__all__ = ["BUDGETS", "DATA_SETS", "EXPERIMENTS", "ExperimentOptions", "run_experiment"]
