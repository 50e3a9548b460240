"""The pinned recipes, budgets and seeded `fit` calls shared by the experiments that train networks, and the
setup text generated from the configuration each run actually used."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..data.load import is_streamed
from ..train import History, TrainConfig, fit
from .options import ExperimentOptions

# TrainConfig fields an experiment sets per run (which net, which data and how much of it, seed, where, how
# fast); a recipe pins every other field, so a later change of TrainConfig's defaults cannot change a result
PER_RUN = frozenset({"model", "data", "data_root", "epochs", "batch_size", "lr", "limit", "test_limit",
                     "image_size", "seed", "out", "device", "quiet", "workers", "shortcut", "spec_overrides"})  # fmt: skip

# The short-run recipe the training experiments start from: SGD with Nesterov momentum and a one-cycle LR,
# 2 px crops (an eighth of the 16 px images of the CPU budgets; the paper pads 4 of 32) and flips; no label
# smoothing, single-view test and no validation split (the last epoch is the model), as in the paper's curves.
SHORT_RUN: dict[str, Any] = {
    "optimizer": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "adam_beta2": 0.999, "adam_eps": 1e-8,
    "schedule": "onecycle",
    "milestones": None, "gamma": 0.1, "warmup_epochs": 1.0, "label_smoothing": 0.0, "crop_padding": 2, "crop_scale": 0.08,
    "crop_ratio": 4 / 3, "eval_resize": 1.14, "normalize": True, "rotate": 0.0, "zoom": 1.0, "warp": 0.0, "lighting": 0.0, "flip": True, "cutout": 0, "mixup": 0.0, "weights": None, "freeze": False, "freeze_epochs": 0,
    "train_bn": True, "lr_ratio": 10.0, "in_channels": None, "drop_rate": 0.0, "stochastic_depth": 0.0,
    "zero_init_residual": False, "progressive_from": 0, "precision": "fp32", "channels_last": None,
    "compile": False, "ema": 0.0, "grad_clip": 0.0, "class_weights": None, "sampler": "random",
    "val_split": 0.0, "monitor": None, "early_stop": 0, "eval_every": 1, "positive": None, "threshold": 0.5,
    "strict_data": False, "tta": False, "deterministic": False, "sync_bn": False,
}  # fmt: skip


@dataclass(frozen=True)
class TrainBudget:
    """How much data, how many epochs and which peak LR one training run of an experiment gets."""

    epochs: int
    limit: int | None  # training images (balanced over classes); None = all
    test_limit: int | None  # test images; None = all
    batch_size: int
    lr: float  # peak LR
    image_size: int | None = None  # None = the data's own size


def make_config(
    options: ExperimentOptions,
    budget: TrainBudget,
    recipe: dict[str, Any],
    out: Path,
    model: str,
    seed: int,
    **changes: Any,
) -> TrainConfig:
    """The complete TrainConfig of one run: the recipe, the budget's sizes and the run's own `changes`."""
    missing = {f.name for f in fields(TrainConfig)} - PER_RUN - set(recipe)
    if missing:
        raise ValueError(f"the experiment's recipe does not pin {', '.join(sorted(missing))}")
    per_run = {"model": model, "data": options.data, "data_root": options.data_root, "epochs": budget.epochs,
               "batch_size": budget.batch_size, "lr": budget.lr, "limit": budget.limit,
               "test_limit": budget.test_limit, "image_size": budget.image_size, "seed": seed,
               "device": options.device, "out": str(out), "quiet": True, "workers": 0}  # fmt: skip
    return TrainConfig(**{**recipe, **per_run, **changes})


def train(
    options: ExperimentOptions,
    budget: TrainBudget,
    recipe: dict[str, Any],
    out: Path,
    model: str,
    seed: int,
    **changes: Any,
) -> History:
    """Train `model` with the experiment's recipe; `changes` are extra TrainConfig fields (e.g. shortcut). The
    experiment owns its run folders, so a re-run replaces the runs of an earlier one."""
    return fit(make_config(options, budget, recipe, out, model, seed, **changes), overwrite=True)


def final_row(label: str, history: History, seed: int) -> dict[str, Any]:
    """The last epoch's training error, the final model's test error and the run's time, as a table row."""
    return {
        "model": label,
        "seed": seed,
        "train_error": 1 - history.epochs[-1]["train_acc"],
        "test_error": 1 - history.test_acc,
        "test_acc": history.test_acc,
        "seconds": history.seconds,
        "test_images": int(history.final.confusion.sum()),
    }


def describe(cfg: TrainConfig) -> str:
    """The recipe of a run, in words, from the configuration it used."""
    images = "all" if cfg.limit is None else f"{cfg.limit:,}"
    tests = "all" if cfg.test_limit is None else f"{cfg.test_limit:,}"
    size = "native size" if cfg.image_size is None else f"{cfg.image_size} px"
    if cfg.optimizer == "sgd":
        kind = "Nesterov" if cfg.nesterov and cfg.momentum else "heavy-ball" if cfg.momentum else "no"
        optimizer = f"SGD (momentum {cfg.momentum:g}, {kind})"
    else:
        optimizer = "AdamW"
    warmup = f"{cfg.warmup_epochs:g} warm-up epoch(s), then " if cfg.warmup_epochs else ""
    milestones = cfg.milestones or (0.5, 0.75)
    schedule = {
        "onecycle": "linear decay to 0 (one-cycle)",
        "cosine": "cosine decay to 0",
        "step": f"x{cfg.gamma:g} at {', '.join(f'{m:g}' for m in milestones)} of the run",
        "constant": "constant",
        "fastai": "fastai's one-cycle (cosine up, cosine down to lr/1e5)",
    }[cfg.schedule]
    parts = cfg.augment().describe(in_memory=not is_streamed(cfg.data))
    parts += [f"mixup {cfg.mixup:g}"] if cfg.mixup else []
    selection = (
        f"{cfg.val_split:g} validation split selects" if cfg.val_split else "the last epoch is the model"
    )
    return (
        f"{cfg.epochs} epoch(s) on {images} training images (batch {cfg.batch_size}, {size}), tested on {tests} "
        f"test images; {optimizer}, peak lr {cfg.lr:g}, {warmup}{schedule}; weight decay {cfg.weight_decay:g} "
        f"(not on BatchNorm or biases); label smoothing {cfg.label_smoothing:g}; augmentation: "
        f"{' + '.join(parts) or 'none'}; {'flip test-time augmentation' if cfg.tta else 'single-view test'}; "
        f"{selection}; precision {cfg.precision}"
    )
