"""The learning-rate range test (Smith 2015, fastai's `lr_find`): train a throw-away copy of the model for a
few batches while the LR grows exponentially, and suggest the LR where the loss falls fastest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data import make_loader
from ..files import atomic_write
from .config import TrainConfig
from .loop import set_frozen
from .setup import prepare
from .step import training_step

SMOOTHING = 0.98  # exponential moving average of the loss, debiased, as fastai
DIVERGE = 4.0  # stop once the smoothed loss exceeds this multiple of its minimum


def suggest_lr(lrs: list[float], losses: list[float]) -> float:
    """The LR at the steepest descent of the (smoothed) loss against log(LR); with too few points to take a
    slope, a tenth of the LR of the lowest loss."""
    if not lrs:
        raise ValueError("no losses were recorded: cannot suggest a learning rate")
    best = int(np.argmin(losses))
    if len(lrs) < 5:
        return lrs[best] / 10
    # skip the first few (still-warming) points and everything after the minimum's neighbourhood
    lo, hi = min(len(lrs) // 10, 3), min(len(lrs), best + 2)
    if hi - lo < 3:
        return max(lrs[best] / 10, lrs[0])
    slopes = np.gradient(np.asarray(losses[lo:hi]), np.log(np.asarray(lrs[lo:hi])))
    return float(lrs[lo + int(np.argmin(slopes))])


def lr_find(
    cfg: TrainConfig, start: float = 1e-5, end: float = 10.0, steps: int = 100
) -> tuple[list[float], list[float], float]:
    """Run the range test for `cfg` (model, data, optimizer, freezing as `resnets train` would use them).

    Returns the LRs tried, their smoothed losses and the suggested peak LR. Training happens on a fresh
    copy that is thrown away afterwards; nothing is written to disk.
    """
    if not 0 < start < end:
        raise ValueError(f"need 0 < start < end, got start={start}, end={end}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    setup = prepare(cfg)  # the model, data, format, sync-BN and class weights `resnets train` would use
    runtime, bundle, model, optimizer = setup.runtime, setup.bundle, setup.model, setup.optimizer
    set_frozen(model, cfg.frozen_epochs > 0, cfg.train_bn)  # fine-tuning: the head phase's LR
    augment = cfg.augment()
    growth = (end / start) ** (1 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    average, lowest, epoch = 0.0, math.inf, 0
    model.train()
    while len(lrs) < steps:
        loader = make_loader(bundle, "train", cfg.batch_size, train=True, augment=augment, device=runtime.device,
                             seed=cfg.seed, epoch=epoch, workers=cfg.workers,
                             channels_last=runtime.channels_last)  # fmt: skip
        for x, y in loader:
            lr = start * growth ** len(lrs)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["base_scale"]
            loss, _ = training_step(model, optimizer, x, y, amp_dtype=runtime.amp_dtype, scaler=runtime.scaler,
                                    label_smoothing=cfg.label_smoothing, grad_clip=cfg.grad_clip,
                                    class_weight=setup.class_weight)  # fmt: skip
            value = loss.item()
            if not math.isfinite(value):
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * value
            smoothed = average / (1 - SMOOTHING ** (len(lrs) + 1))
            lrs.append(lr)
            losses.append(smoothed)
            lowest = min(lowest, smoothed)
            if len(lrs) >= steps or (len(lrs) > 5 and smoothed > DIVERGE * lowest):
                break
        else:
            epoch += 1
            continue
        break  # diverged or done
    return lrs, losses, suggest_lr(lrs, losses)


def plot_lr_find(lrs: list[float], losses: list[float], suggestion: float, path: str | Path) -> Path:
    """Loss against LR (log scale) with the suggestion marked, as a PNG."""
    from .plots import plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="red", linestyle="--", label=f"suggested lr {suggestion:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss", title="LR range test")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return path
