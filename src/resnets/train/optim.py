"""Optimiser, parameter groups (no decay on BN/biases, discriminative LRs) and the LR schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..models import ResNet
from .config import TrainConfig
from .distributed import world_size

STEP_MILESTONES = (0.5, 0.75)  # the step schedule's default: the paper's 32k and 48k of 64k iterations


def default_lr(cfg: TrainConfig) -> float:
    """Peak LR when none is given: the linear scaling rule for SGD (0.1 per 128 images of the global batch,
    `batch_size` x the processes of a distributed job), 1e-3 for AdamW."""
    if cfg.lr is not None:
        return cfg.lr
    return 0.1 * cfg.batch_size * world_size() / 128 if cfg.optimizer == "sgd" else 1e-3


def layer_groups(model: ResNet) -> list[list[nn.Parameter]]:
    """Parameters from input to output: stem, each stage, then the head (fastai's layer groups)."""
    stem = [p for n, p in model.named_parameters() if n.startswith(("conv1", "bn1"))]
    stages = [list(stage.parameters()) for stage in model.stages]
    head = list(model.final_bn.parameters()) + list(model.fc.parameters())
    return [stem, *stages, head]


def param_groups(model: ResNet, lr: float, weight_decay: float, lr_ratio: float = 1.0) -> list[dict]:
    """Groups with their own LR (geometric from lr/lr_ratio at the stem to lr at the head) and no weight
    decay on BatchNorm parameters and biases (1-D tensors), which it only shrinks without regularising."""
    groups = layer_groups(model)
    out = []
    for i, params in enumerate(groups):
        scale = lr_ratio ** (-(len(groups) - 1 - i) / (len(groups) - 1))
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        out += [
            {"params": decay, "lr": lr * scale, "weight_decay": weight_decay, "base_scale": scale},
            {"params": no_decay, "lr": lr * scale, "weight_decay": 0.0, "base_scale": scale},
        ]
    return [g for g in out if g["params"]]


def make_optimizer(model: ResNet, cfg: TrainConfig, lr_ratio: float = 1.0) -> torch.optim.Optimizer:
    groups = param_groups(model, default_lr(cfg), cfg.weight_decay, lr_ratio)
    if cfg.optimizer == "sgd":
        nesterov = cfg.nesterov and cfg.momentum > 0
        return torch.optim.SGD(groups, lr=default_lr(cfg), momentum=cfg.momentum, nesterov=nesterov)
    return torch.optim.AdamW(groups, lr=default_lr(cfg), betas=(0.9, cfg.adam_beta2), eps=cfg.adam_eps)


# fastai's fit_one_cycle starts at lr / div (25 by default; fine_tune's second phase passes 5) and ends at
# lr / div_final
FASTAI_DIV, FASTAI_FINAL_DIV = 25.0, 1e5


def fastai_cycle(position: float, pct_start: float, start: float, middle: float, end: float) -> float:
    """fastai's combined_cos at `position` (0 to 1) of a phase: a cosine from `start` to `middle` over the first
    `pct_start`, then one from `middle` to `end` (the shape of fit_one_cycle's LR and momentum)."""

    def cos_between(a: float, b: float, p: float) -> float:
        return a + (1 + math.cos(math.pi * (1 - p))) * (b - a) / 2

    if position < pct_start:
        return cos_between(start, middle, position / pct_start)
    return cos_between(middle, end, (position - pct_start) / (1 - pct_start))


def lr_factor(
    step: int,
    total: int,
    warmup: int,
    schedule: str,
    milestones: Sequence[float] | None = None,
    gamma: float = 0.1,
    div: float = FASTAI_DIV,
) -> float:
    """Multiplier of the peak LR at `step` of `total`: linear warm-up, then linear (one-cycle) or cosine decay
    to 0, `gamma` per milestone passed (step; fractions of `total`, default STEP_MILESTONES), or 1 (constant);
    "fastai": fastai's one-cycle, its warm-up the first `warmup` steps, starting at 1/`div`."""
    if schedule == "fastai":
        return fastai_cycle(step / total, warmup / total, 1 / div, 1.0, 1 / FASTAI_FINAL_DIV)
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        passed = STEP_MILESTONES if milestones is None else milestones
        return gamma ** sum(step >= m * total for m in passed)
    progress = (step - warmup) / max(total - warmup, 1)
    if schedule == "onecycle":
        return max(1.0 - progress, 0.0)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, peak: float, factor: float) -> float:
    """Apply the schedule to every group, keeping each group's discriminative scale; returns the head LR."""
    for group in optimizer.param_groups:
        group["lr"] = peak * factor * group["base_scale"]
    return peak * factor


def set_momentum(optimizer: torch.optim.Optimizer, momentum: float) -> None:
    """Set the momentum of every group: Adam's beta1, or SGD's where it has momentum (plain SGD stays plain)."""
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif group.get("momentum", 0) > 0:
            group["momentum"] = momentum


def blow_up_hint(row: dict, split: str, num_classes: int, cfg: TrainConfig) -> str | None:
    """After the first epoch: a hint when its evaluation looks like a learning rate too high for the data (a
    loss far above chance's ln(classes), or accuracy at chance), else None. Divergence to NaN stops the run
    elsewhere; this catches the finite blow-ups (a test loss of 1206 at chance accuracy) that waste a run."""
    loss, accuracy = row[f"{split}_loss"], row[f"{split}_acc"]
    if loss == "":
        return None
    chance_loss, chance_acc = math.log(num_classes), 1 / num_classes
    symptoms = [f"{split} loss {loss:.4g} (chance: {chance_loss:.2f})"] if loss > 3 * chance_loss else []
    if accuracy <= 1.1 * chance_acc:
        symptoms.append(f"{split} accuracy {100 * accuracy:.1f}% (chance: {100 * chance_acc:.1f}%)")
    if not symptoms:
        return None
    lr = default_lr(cfg)
    return (f"epoch 1 looks like a learning rate too high for this data: {' and '.join(symptoms)}. Try "
            f"`resnets lr-find` with the same flags, or a lower --lr (e.g. {lr / 10:g}; this run's is {lr:g})")  # fmt: skip
