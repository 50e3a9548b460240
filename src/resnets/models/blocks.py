"""The residual block: one class for basic (3x3, 3x3) and bottleneck (1x1, 3x3, 1x1) blocks, post- or
pre-activation, with or without a skip connection. Layer names follow torchvision (`conv1`, `bn1`, ...,
`downsample`) so its state dicts load unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from .shortcuts import make_shortcut
from .spec import EXPANSION, ResNetSpec


def conv_layout(
    spec: ResNetSpec, in_channels: int, planes: int, stride: int
) -> list[tuple[int, int, int, int, int]]:
    """(in, out, kernel, stride, groups) of each conv on the residual path."""
    out_channels = planes * EXPANSION[spec.block]
    if spec.block == "basic":
        return [(in_channels, planes, 3, stride, 1), (planes, planes, 3, 1, 1)]
    width = int(planes * spec.base_width / 64) * spec.groups
    s1, s3 = (stride, 1) if spec.stride_in_1x1 else (1, stride)  # v1 vs v1.5
    return [
        (in_channels, width, 1, s1, 1),
        (width, width, 3, s3, spec.groups),
        (width, out_channels, 1, 1, 1),
    ]


class ResidualBlock(nn.Module):
    """out = relu(F(x) + shortcut(x)) (post-activation, v1) or F(x) + shortcut(x) with BN-ReLU before each
    conv (pre-activation, v2). F is the conv stack from `conv_layout`."""

    def __init__(
        self, spec: ResNetSpec, in_channels: int, planes: int, stride: int, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.preact = spec.preact
        self.residual = spec.residual
        layout = conv_layout(spec, in_channels, planes, stride)
        self.num_convs = len(layout)
        for i, (c_in, c_out, k, s, g) in enumerate(layout, start=1):
            setattr(
                self,
                f"conv{i}",
                nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2, groups=g, bias=spec.conv_bias),
            )
            setattr(self, f"bn{i}", nn.BatchNorm2d(c_in if spec.preact else c_out))
        self.relu = nn.ReLU(inplace=True)
        out_channels = layout[-1][1]
        self.downsample = make_shortcut(spec, in_channels, out_channels, stride)
        # stochastic depth (Huang et al. 2016): the residual branch dropped per sample while training
        self.drop_path = StochasticDepth(drop_path, mode="row") if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the block as an identity (Goyal et al. 2017): zero the last BN scale (v1) or last conv (v2)."""
        last = getattr(self, f"conv{self.num_convs}" if self.preact else f"bn{self.num_convs}")
        nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_preact(x) if self.preact else self._forward_post(x)

    def _forward_post(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(1, self.num_convs + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.num_convs:
                out = self.relu(out)
        if self.residual:
            out = self.drop_path(out)
            out += (
                x if self.downsample is None else self.downsample(x)
            )  # in place, as torchvision: less memory
        return self.relu(out)

    def _forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        for i in range(2, self.num_convs + 1):
            out = getattr(self, f"conv{i}")(F.relu(getattr(self, f"bn{i}")(out)))
        if not self.residual:
            return out
        if self.downsample is None:
            shortcut = x
        elif isinstance(self.downsample, nn.Sequential):  # projection sees the normalised input
            shortcut = self.downsample(pre)
        else:
            shortcut = self.downsample(x)
        out = self.drop_path(out)
        out += shortcut
        return out
