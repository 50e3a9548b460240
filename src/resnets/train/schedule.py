"""When things happen in a run, as plain functions of the epoch or step: the learning-rate schedule,
which epochs evaluate, and the image size of each epoch under progressive resizing."""

from __future__ import annotations

from .config import TrainConfig
from .optim import FASTAI_DIV, fastai_cycle, lr_factor

# fastai's `fine_tune`: the frozen phase's one-cycle peaks after 99% of it (pct_start=0.99), then `base_lr /= 2`
# and the second phase's one-cycle (with --schedule fastai) starts at lr / 5
FINE_TUNE_WARMUP = 0.99
FINE_TUNE_LR = 0.5
FINE_TUNE_DIV = 5.0


# fastai's fit_one_cycle cycles the momentum (SGD's, Adam's beta1) against the LR: 0.95, 0.85 at the peak, 0.95
FASTAI_MOMS = (0.95, 0.85, 0.95)


def phase_at(cfg: TrainConfig, steps_per_epoch: int, step: int) -> tuple[int, int, int, float, float]:
    """The schedule phase `step` is in, as (its first step, its length, its warm-up steps, its LR scale, its
    one-cycle's div). One phase; with --freeze-epochs, fastai's `fine_tune`: the first warms up over 99% of its
    steps, the second (all layers) has its own schedule at half the LR, starting at lr / 5."""
    boundary = cfg.freeze_epochs * steps_per_epoch
    if step < boundary:
        return 0, boundary, int(FINE_TUNE_WARMUP * boundary), 1.0, FASTAI_DIV
    length = cfg.total_epochs * steps_per_epoch - boundary
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), length // 2)
    scale, div = (FINE_TUNE_LR, FINE_TUNE_DIV) if boundary else (1.0, FASTAI_DIV)
    return boundary, length, warmup, scale, div


def lr_multiplier(cfg: TrainConfig, steps_per_epoch: int, step: int) -> float:
    """The LR schedule as a plain function of the global step (a multiplier of the peak LR)."""
    begin, length, warmup, scale, div = phase_at(cfg, steps_per_epoch, step)
    return scale * lr_factor(step - begin, length, warmup, cfg.schedule, cfg.milestones, cfg.gamma, div)


def momentum_at(cfg: TrainConfig, steps_per_epoch: int, step: int) -> float | None:
    """With --schedule fastai, fit_one_cycle's momentum at the global step (FASTAI_MOMS, the same cosines as its
    LR); otherwise None: the optimizer keeps its own."""
    if cfg.schedule != "fastai":
        return None
    begin, length, warmup, _, _ = phase_at(cfg, steps_per_epoch, step)
    return fastai_cycle((step - begin) / length, warmup / length, *FASTAI_MOMS)


def evaluates(cfg: TrainConfig, epoch: int) -> bool:
    """Whether 0-based `epoch` ends with an evaluation: every `eval_every` epochs, and always the last."""
    return (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.total_epochs


# progressive resizing reaches the full size after this fraction of the epochs (FFCV's ResNet recipes ramp up
# to their final resolution a few epochs before the end, so that BatchNorm and the last epochs see it)
PROGRESSIVE_END = 0.75


def train_size(cfg: TrainConfig, epoch: int, full: tuple[int, int]) -> tuple[int, int]:
    """The image size 0-based `epoch` trains at: `full`, or with --progressive-from S (> 0), S at the first epoch
    growing linearly to `full` by epoch round(3/4 of the epochs) - 1, and `full` from there on."""
    if not cfg.progressive_from:
        return full
    last_ramp = max(1, round(PROGRESSIVE_END * cfg.total_epochs) - 1)
    grown = min(1.0, epoch / last_ramp)
    start = cfg.progressive_from
    return (round(start + grown * (full[0] - start)), round(start + grown * (full[1] - start)))
