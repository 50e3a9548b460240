"""Stems: what turns the image into the first stage's input."""

from __future__ import annotations

import torch
from torch import nn

from .spec import ResNetSpec


def stem_conv(spec: ResNetSpec, in_channels: int) -> nn.Module:
    """The stem's convolution(s), registered as `conv1` (torchvision and timm names)."""
    out, bias = spec.stem_channels, spec.conv_bias
    if spec.stem in ("imagenet", "unpadded"):  # paper Table 1: 7x7, 64, stride 2
        return nn.Conv2d(
            in_channels, out, 7, stride=2, padding=3 if spec.stem == "imagenet" else 0, bias=bias
        )
    if spec.stem == "cifar":  # paper section 4.2: 3x3, 16, stride 1
        return nn.Conv2d(in_channels, out, 3, stride=1, padding=1, bias=bias)
    # v1c/v1d deep stem (Bag of Tricks): three 3x3 convs replace the 7x7; the last BN is the model's `bn1`
    w = spec.stem_width
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, stride=2, padding=1, bias=bias),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, w, 3, stride=1, padding=1, bias=bias),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, out, 3, stride=1, padding=1, bias=bias),
    )


def stem_pool(spec: ResNetSpec) -> nn.Module:
    """3x3/2 max-pool after ImageNet stems; CIFAR nets keep full resolution."""
    if spec.stem == "cifar":
        return nn.Identity()
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=0 if spec.stem == "unpadded" else 1)


def check_image(module: nn.Module, args: tuple[object, ...]) -> None:
    """Forward pre-hook on a model's input: a ValueError that names the problem, instead of a shape error
    deep inside. A hook, not a check in `forward`: eager calls, `torch.compile` and `torch.export` run it
    (it reads only the static rank and channel count, so it traces without graph breaks), while FX's
    symbolic tracing, which cannot branch on a traced shape, traces `forward` alone and skips it."""
    x, expected = args[0], module.in_channels
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(
            f"expected a 4-D batch (N, {expected}, H, W), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0)"
        )
    if x.shape[1] != expected:
        raise ValueError(
            f"expected {expected} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)}); "
            f"create the model with in_channels={x.shape[1]} or convert the images"
        )
    low = module.min_input_size
    if low > 1 and min(x.shape[2:]) < low:  # only nets with a minimum (unpadded layers) read the size
        raise ValueError(
            f"this network's unpadded stem needs images of at least {low}x{low} px, got "
            f"{x.shape[2]}x{x.shape[3]}; resize them (e.g. --image-size {low} or more)"
        )
