"""Skip connections: the paper's options A (zero-pad identity) and B/C (1x1 projection)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .spec import ResNetSpec


class ZeroPadShortcut(nn.Module):
    """Option A: take every `stride`-th pixel and zero-pad the new channels, half before, half after.

    Parameter-free, as in the paper's CIFAR nets. The even split matches the widely used CIFAR
    reproductions, so their weights give the same outputs here.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        if extra < 0:
            raise ValueError(f"option A cannot reduce channels ({in_channels} -> {out_channels})")
        self.pad_before, self.pad_after = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


def projection(
    in_channels: int, out_channels: int, stride: int, *, avg_down: bool, with_bn: bool, bias: bool = False
) -> nn.Sequential:
    """Options B/C: strided 1x1 conv (+BN). With `avg_down` (ResNet-D) the stride moves to a 2x2 avg-pool.

    Layouts follow torchvision (`downsample.0` conv, `.1` bn) and timm's ResNet-D
    (`downsample.0` pool, `.1` conv, `.2` bn) so their weights load by name.
    """
    layers: list[nn.Module] = []
    if avg_down:
        pool = (
            nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        )
        layers.append(pool)
        stride = 1
    layers.append(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias))
    if with_bn:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


def make_shortcut(spec: ResNetSpec, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The block's `downsample` module, or None for a plain identity (or for no skip at all). Pre-activation
    blocks normalise before the split, so their projection has no BN; nor has d2l's (`projection_norm`)."""
    kind = spec.shortcut
    shape_changes = stride != 1 or in_channels != out_channels
    if kind == "none" or (kind in ("A", "B") and not shape_changes):
        return None
    if kind == "A":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    with_bn = spec.projection_norm and not spec.preact
    return projection(
        in_channels, out_channels, stride, avg_down=spec.avg_down, with_bn=with_bn, bias=spec.conv_bias
    )
