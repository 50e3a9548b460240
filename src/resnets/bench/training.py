"""Training-step throughput: SGD steps on random data, ours vs torchvision, and naive vs fast precision."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..machine import bf16_native
from ..train.step import training_step
from .config import Context
from .models import input_side, macs_per_image, ours, torchvision_twin


def fixed_batch_step(
    ctx: Context, model: nn.Module, batch: int, side: int, *, bf16: bool, channels_last: bool
) -> Callable[[], object]:
    """A full training step (forward, loss, backward, SGD update) on one fixed random batch."""
    device = ctx.device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    x = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, model.fc.out_features, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return lambda: training_step(model, optimizer, x, y, amp_dtype=torch.bfloat16 if bf16 else None)


def _row(ctx: Context, name: str, impl: str, variant: str, batch: int, side: int, rate: float) -> dict:
    macs = macs_per_image(name, side)
    precision = variant.split("-")[0]
    return {
        "model": name,
        "impl": impl,
        "variant": variant,
        "batch_size": batch,
        "image_size": side,
        "images_per_s": rate,
        "gmacs_per_image": macs / 1e9,
        "fraction_of_peak": ctx.fraction_of_peak(macs, rate, precision, passes=3),
    }


def training_rows(ctx: Context) -> list[dict]:
    """ImageNet nets: ours and torchvision's in eager fp32 NCHW. CIFAR nets: naive fp32 NCHW, then the other
    formats `resnets train` chooses from on a CPU (fp32 NHWC; bf16 autocast NCHW and NHWC where native)."""
    c = ctx.config
    rows = []
    for name in c.models:
        side = input_side(name, c.image_size)
        impls = [
            (impl, m) for impl, m in (("ours", ours(name)), ("torchvision", torchvision_twin(name))) if m
        ]
        steps = [
            fixed_batch_step(ctx, m, c.batch_size, side, bf16=False, channels_last=False) for _, m in impls
        ]
        for (impl, _), seconds in zip(impls, ctx.time_each(steps), strict=True):
            rows.append(_row(ctx, name, impl, "fp32-nchw", c.batch_size, side, c.batch_size / seconds))
    fast = "bf16" if bf16_native(ctx.device) else "fp32"
    for name in c.cifar_models:
        side = input_side(name, c.image_size)
        formats = list(dict.fromkeys([("fp32", False), ("fp32", True), (fast, False), (fast, True)]))
        steps = [fixed_batch_step(ctx, ours(name), c.cifar_batch_size, side, bf16=precision == "bf16",
                               channels_last=channels_last) for precision, channels_last in formats]  # fmt: skip
        for (precision, channels_last), seconds in zip(formats, ctx.time_each(steps), strict=True):
            variant = f"{precision}-{'nhwc' if channels_last else 'nchw'}"
            rate = c.cifar_batch_size / seconds
            rows.append(_row(ctx, name, "ours", variant, c.cifar_batch_size, side, rate))
    return rows
