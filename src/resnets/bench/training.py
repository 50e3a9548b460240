"""Training-step throughput: SGD steps on random data, ours vs torchvision, and naive vs fast precision."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..machine import bf16_native
from ..train.step import training_step
from .config import Context
from .models import Net, macs_per_image, net_fields, ours, torchvision_twin


def fixed_batch_step(
    ctx: Context, model: nn.Module, net: Net, batch: int, *, bf16: bool, channels_last: bool
) -> Callable[[], object]:
    """A full training step (forward, loss, backward, SGD update) on one fixed random batch of `net`'s input."""
    device = ctx.device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    x = net.inputs(batch, device).contiguous(memory_format=memory_format)
    y = torch.randint(0, model.fc.out_features, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    return lambda: training_step(model, optimizer, x, y, amp_dtype=torch.bfloat16 if bf16 else None)


def _row(ctx: Context, net: Net, impl: str, variant: str, batch: int, rate: float) -> dict:
    macs = macs_per_image(net)
    precision = variant.split("-")[0]
    return {
        **net_fields(net),
        "impl": impl,
        "variant": variant,
        "batch_size": batch,
        "images_per_s": rate,
        "gmacs_per_image": macs / 1e9,
        "fraction_of_peak": ctx.fraction_of_peak(macs, rate, precision, passes=3),
    }


def training_rows(ctx: Context, nets: Sequence[Net]) -> list[dict]:
    """ImageNet nets: ours and torchvision's (where it has the same net) in eager fp32 NCHW. CIFAR nets:
    naive fp32 NCHW, then the other formats `resnets train` chooses from on a CPU (fp32 NHWC; bf16 autocast
    NCHW and NHWC where native)."""
    c = ctx.config
    fast = "bf16" if bf16_native(ctx.device) else "fp32"
    rows = []
    for net in nets:
        if not net.cifar:
            twin = torchvision_twin(net)
            impls = [("ours", ours(net))] + ([] if twin is None else [("torchvision", twin)])
            steps = [
                fixed_batch_step(ctx, m, net, c.batch_size, bf16=False, channels_last=False) for _, m in impls
            ]
            for (impl, _), seconds in zip(impls, ctx.time_each(steps), strict=True):
                rows.append(_row(ctx, net, impl, "fp32-nchw", c.batch_size, c.batch_size / seconds))
            continue
        formats = list(dict.fromkeys([("fp32", False), ("fp32", True), (fast, False), (fast, True)]))
        steps = [fixed_batch_step(ctx, ours(net), net, c.cifar_batch_size, bf16=precision == "bf16",
                                  channels_last=channels_last) for precision, channels_last in formats]  # fmt: skip
        for (precision, channels_last), seconds in zip(formats, ctx.time_each(steps), strict=True):
            variant = f"{precision}-{'nhwc' if channels_last else 'nchw'}"
            rate = c.cifar_batch_size / seconds
            rows.append(_row(ctx, net, "ours", variant, c.cifar_batch_size, rate))
    return rows
