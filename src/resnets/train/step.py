"""One training step, the only one in the project: the loop, lr-find, the CPU format search, the benchmark
and the experiments all update weights through `training_step`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MixedTargets:
    """Mixup's labels (Zhang et al., 2018): the batch was blended as lam * x + (1 - lam) * x[perm], so the
    loss is lam * CE(y_a) + (1 - lam) * CE(y_b)."""

    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float


def classification_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    label_smoothing: float = 0.0,
    mixed: MixedTargets | None = None,
    class_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy with label smoothing (and per-class weights: a weighted mean, as PyTorch's), against
    mixup's two label sets when `mixed` is given (then `y` is not used)."""

    def ce(target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=class_weight, label_smoothing=label_smoothing)

    if mixed is None:
        return ce(y)
    return mixed.lam * ce(mixed.y_a) + (1 - mixed.lam) * ce(mixed.y_b)


def training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    label_smoothing: float = 0.0,
    mixed: MixedTargets | None = None,
    grad_clip: float = 0.0,
    class_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (under autocast to `amp_dtype` when given), loss, backward, optional gradient clipping (of
    the total norm to `grad_clip`) and one optimizer step. Returns the loss and the logits, detached.

    With a `scaler` (fp16), the loss is scaled before backward so small gradients do not flush to zero,
    the gradients are unscaled before clipping, and a step whose gradients hold inf or NaN is skipped
    (the scaler then lowers its scale), as `torch.amp.GradScaler` prescribes.
    """
    amp = torch.autocast(x.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)
    with amp:
        logits = model(x)
        loss = classification_loss(logits, y, label_smoothing, mixed, class_weight)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)  # skipped when the gradients are not finite
        scaler.update()
    return loss.detach(), logits.detach()
