"""Training-step throughput: SGD steps on random data, ours vs torchvision, and naive vs fast precision."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import Context
from .machine import bf16_supported
from .models import input_side, macs_per_image, ours, torchvision_twin


def images_per_s(
    ctx: Context, model: nn.Module, batch: int, side: int, *, bf16: bool, channels_last: bool
) -> float:
    """Images/s of full training steps (forward, loss, backward, SGD update) on one fixed random batch."""
    device = ctx.device
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    x = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, model.fc.out_features, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return batch / ctx.time(step)


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
    """ImageNet nets: ours and torchvision's in eager fp32 NCHW. CIFAR nets: naive fp32 NCHW, then the fast
    candidates (bf16 autocast where native, else fp32; NCHW and NHWC) so the faster layout is measured."""
    c = ctx.config
    rows = []
    for name in c.models:
        side = input_side(name, c.image_size)
        for impl, model in (("ours", ours(name)), ("torchvision", torchvision_twin(name))):
            if model is not None:
                rate = images_per_s(ctx, model, c.batch_size, side, bf16=False, channels_last=False)
                rows.append(_row(ctx, name, impl, "fp32-nchw", c.batch_size, side, rate))
    fast = "bf16" if bf16_supported(ctx.device) else "fp32"
    for name in c.cifar_models:
        side = input_side(name, c.image_size)
        for precision, channels_last in dict.fromkeys([("fp32", False), (fast, False), (fast, True)]):
            variant = f"{precision}-{'nhwc' if channels_last else 'nchw'}"
            rate = images_per_s(
                ctx,
                ours(name),
                c.cifar_batch_size,
                side,
                bf16=precision == "bf16",
                channels_last=channels_last,
            )
            rows.append(_row(ctx, name, "ours", variant, c.cifar_batch_size, side, rate))
    return rows
