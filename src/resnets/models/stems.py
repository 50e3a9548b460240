"""Stems: what turns the image into the first stage's input."""

from __future__ import annotations

from torch import nn

from .spec import ResNetSpec


def stem_conv(spec: ResNetSpec, in_channels: int) -> nn.Module:
    """The stem's convolution(s), registered as `conv1` (torchvision and timm names)."""
    out = spec.stem_channels
    if spec.stem == "imagenet":  # paper Table 1: 7x7, 64, stride 2
        return nn.Conv2d(in_channels, out, 7, stride=2, padding=3, bias=False)
    if spec.stem == "cifar":  # paper section 4.2: 3x3, 16, stride 1
        return nn.Conv2d(in_channels, out, 3, stride=1, padding=1, bias=False)
    # v1c/v1d deep stem (Bag of Tricks): three 3x3 convs replace the 7x7; the last BN is the model's `bn1`
    w = spec.stem_width
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, w, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(inplace=True),
        nn.Conv2d(w, out, 3, stride=1, padding=1, bias=False),
    )


def stem_pool(spec: ResNetSpec) -> nn.Module:
    """3x3/2 max-pool after ImageNet stems; CIFAR nets keep full resolution."""
    if spec.stem == "cifar":
        return nn.Identity()
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
