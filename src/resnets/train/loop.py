"""The training loop's parts: `train_one_epoch`, `evaluate`, and building a run's model and data
(`fit.py` ties them into a run with its folder, checkpoints and report)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from ..data import DataBundle, FolderSplit, load_dataset, mixup
from ..data.bundle import balanced_subset
from ..models import ResNet, ResNetSpec, create_model
from ..models.registry import resolve_spec
from . import distributed
from .config import TrainConfig
from .metrics import EvalResult, MetricAccumulator
from .optim import default_lr, set_lr, set_momentum
from .progress import progress
from .runtime import Runtime
from .step import MixedTargets, training_step

# Seconds between the progress bar's loss/accuracy updates; each one waits for the device to catch up.
POSTFIX_INTERVAL = 0.5


def show_progress(cfg: TrainConfig, runtime: Runtime) -> bool:
    return runtime.is_main and not cfg.quiet


def log(cfg: TrainConfig, runtime: Runtime, message: str) -> None:
    if runtime.is_main and not cfg.quiet:
        print(message, flush=True)


def train_one_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    runtime: Runtime,
    cfg: TrainConfig,
    lr_at: callable,
    step: int,
    generator: torch.Generator,
    ema: nn.Module | None = None,
    desc: str = "train",
    class_weight: torch.Tensor | None = None,
    momentum_at: Callable[[int], float | None] | None = None,
) -> tuple[float, float, int]:
    """One pass over `loader`; returns (mean loss, accuracy, next global step). LR is set every step;
    `class_weight` weighs each class's loss (--class-weights balanced). Loss and accuracy are summed on the
    device and read once per epoch (and for the progress bar at most every POSTFIX_INTERVAL s), as PyTorch's
    performance guide advises against a GPU sync per step; on an H100 a read per step was not measurably
    slower for ResNet-20 at 32 px, eager or graphed (docs/gpu.md)."""
    model.train()
    shown = show_progress(cfg, runtime)
    bar = progress(loader, desc, enabled=shown)
    loss_sum = torch.zeros((), device=runtime.device)
    correct = torch.zeros((), dtype=torch.long, device=runtime.device)
    seen, start, shown_at = 0, time.perf_counter(), 0.0
    for x, y in bar:
        set_lr(optimizer, default_lr(cfg), lr_at(step))
        if momentum_at is not None and (momentum := momentum_at(step)) is not None:
            set_momentum(optimizer, momentum)
        mixed = None
        if cfg.mixup > 0:
            x, y_a, y_b, lam = mixup(x, y, cfg.mixup, generator)
            mixed = MixedTargets(y_a, y_b, lam)
        if runtime.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # this step's replay may overwrite the last outputs
        loss, logits = training_step(model, optimizer, x, y, amp_dtype=runtime.amp_dtype, scaler=runtime.scaler,
                                     label_smoothing=cfg.label_smoothing, mixed=mixed, grad_clip=cfg.grad_clip,
                                     class_weight=class_weight)  # fmt: skip
        if ema is not None:
            ema.update_parameters(model)
        step += 1
        n = len(y)
        loss_sum += loss.float() * n
        correct += (logits.argmax(1) == y).sum()
        seen += n
        now = time.perf_counter()
        if shown and now - shown_at >= POSTFIX_INTERVAL:
            shown_at = now
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{seen / (now - start):.0f}")  # fmt: skip
    total_loss, total_correct = loss_sum.item(), correct.item()  # a non-finite loss: `run.check_finite` stops
    return total_loss / max(seen, 1), total_correct / max(seen, 1), step


@torch.no_grad()
def evaluate(model: nn.Module, loader, num_classes: int, runtime: Runtime, tta: bool = False) -> EvalResult:
    """Loss, top-1/top-5 and confusion matrix over `loader`; `tta` averages with the mirrored image.
    In a distributed job each rank evaluates every world_size-th batch and all get the summed result."""
    model.eval()
    acc = MetricAccumulator(num_classes)
    for x, y in islice(loader, runtime.rank, None, runtime.world_size):
        with runtime.autocast():
            logits = model(x).float()
            if tta:  # mean of the two views' probabilities, in log space: no log(0) when both underflow
                views = torch.stack([logits.log_softmax(1), model(x.flip(3)).float().log_softmax(1)])
                logits = views.logsumexp(0) - math.log(2)
        acc.update(logits, y, F.cross_entropy(logits, y, reduction="sum").item())
    return (distributed.reduce_metrics(acc, runtime.device) if runtime.world_size > 1 else acc).result()


def model_spec(cfg: TrainConfig) -> ResNetSpec:
    """`cfg.model`'s spec with `cfg.shortcut` and `cfg.spec_overrides`, by the same rule as `create_model`."""
    return resolve_spec(cfg.model, cfg.shortcut, cfg.spec_overrides)


def build_model(cfg: TrainConfig, bundle: DataBundle) -> ResNet:
    """The model for this data: classes from the data, channels from the data (or --in-channels)."""
    # named weights (IMAGENET1K_V1) come with ImageNet's classes and normalisation; fine-tuning keeps the
    # data's: a new classifier for its classes (with a warning) and its own mean and std
    return create_model(
        cfg.model,
        num_classes=bundle.num_classes,
        in_channels=bundle.channels,
        weights=cfg.weights,
        shortcut=cfg.shortcut,
        zero_init_residual=cfg.zero_init_residual and cfg.weights is None,
        drop_rate=cfg.drop_rate,
        stochastic_depth=cfg.stochastic_depth,
        spec_overrides=cfg.spec_overrides,
    )


def load_data(cfg: TrainConfig) -> DataBundle:
    """The data set of `cfg` at its own size (or `--image-size`): any model takes any size, down to 1 px."""
    bundle = load_dataset(
        cfg.data,
        cfg.data_root,
        channels=cfg.in_channels,
        image_size=cfg.image_size,
        val_split=cfg.val_split,
        strict=cfg.strict_data,
        limit=cfg.limit,
        eval_resize=cfg.eval_resize,
    )
    if cfg.test_limit is not None and cfg.test_limit < len(bundle.test):
        labels = bundle.test.targets if isinstance(bundle.test, FolderSplit) else bundle.test.labels.tolist()
        bundle.test = bundle.test.subset(balanced_subset(labels, cfg.test_limit))
    if (
        not cfg.normalize
    ):  # pixels in [0, 1] as d2l's loaders give them; predict and evaluate follow the weights
        bundle.mean, bundle.std = (0.0,) * bundle.channels, (1.0,) * bundle.channels
    return bundle


def set_frozen(model: ResNet, frozen: bool, train_bn: bool = True) -> None:
    """Freeze (or unfreeze) everything but the classifier head, for transfer learning. With `train_bn`
    BatchNorm's scale and shift stay trainable while frozen, as fastai's `fine_tune` does (`train_bn=True`):
    the new data's statistics differ from the pretraining data's."""
    keep = {id(p) for p in list(model.fc.parameters()) + list(model.final_bn.parameters())}
    if train_bn:
        keep |= {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(not frozen)
