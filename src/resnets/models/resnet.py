"""The one `ResNet` class: stem, stages of residual blocks, global average pool, classifier."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ResidualBlock
from .spec import EXPANSION, ResNetSpec
from .stems import stem_conv, stem_pool


def make_stage(
    spec: ResNetSpec, in_channels: int, planes: int, blocks: int, stride: int, drop_paths: list[float]
) -> nn.Sequential:
    """One stage: the first block changes resolution/width, the rest keep it."""
    out_channels = planes * EXPANSION[spec.block]
    return nn.Sequential(
        *(
            ResidualBlock(spec, in_channels if i == 0 else out_channels, planes, stride if i == 0 else 1, dp)
            for i, dp in zip(range(blocks), drop_paths, strict=True)
        )
    )


class ResNet(nn.Module):
    """A ResNet built from a `ResNetSpec`.

    Module names match torchvision (`conv1`, `bn1`, `layer1`..`layerN`, `fc`), so its weights load with
    `strict=True`. Global average pooling makes the network accept any input size from
    `spec.min_input_size` up, square or not.
    """

    def __init__(
        self,
        spec: ResNetSpec,
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        drop_rate: float = 0.0,
        stochastic_depth: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= stochastic_depth < 1.0:
            raise ValueError("drop_rate and stochastic_depth are probabilities in [0, 1)")
        self.spec = spec
        self.num_classes = num_classes
        self.in_channels = in_channels

        self.conv1 = stem_conv(spec, in_channels)
        # pre-activation nets normalise at the start of each block, so the stem has no BN-ReLU
        self.bn1 = nn.Identity() if spec.preact else nn.BatchNorm2d(spec.stem_channels)
        self.relu = nn.Identity() if spec.preact else nn.ReLU(inplace=True)
        self.maxpool = stem_pool(spec)

        # stochastic depth grows linearly with the block index (Huang et al. 2016)
        total = sum(spec.layers)
        rates = [stochastic_depth * i / max(total - 1, 1) for i in range(total)]
        channels = spec.stem_channels
        for s, (planes, blocks) in enumerate(zip(spec.widths, spec.layers, strict=True)):
            done = sum(spec.layers[:s])
            stage = make_stage(
                spec, channels, planes, blocks, 1 if s == 0 else 2, rates[done : done + blocks]
            )
            self.add_module(f"layer{s + 1}", stage)
            channels = planes * EXPANSION[spec.block]

        # v2 ends with a BN-ReLU, since its blocks output un-normalised sums
        self.final_bn = nn.BatchNorm2d(channels) if spec.preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)
        self.reset_parameters(zero_init_residual)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.spec.layers))]

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """He init for convs (fan-out, as torchvision), BN to identity, optionally zero-init each block's end."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    m.zero_init_last()

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError that names the problem, instead of a shape error deep inside."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4:
            raise ValueError(
                f"expected a 4-D batch (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}; "
                "add a batch dimension with x.unsqueeze(0)"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)}); "
                f"create the model with in_channels={x.shape[1]} or convert the images"
            )
        size = self.spec.min_input_size
        if x.shape[2] < size or x.shape[3] < size:
            raise ValueError(
                f"input {x.shape[2]}x{x.shape[3]} is too small: this model needs at least {size}x{size}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) image -> (N, num_features, H/s, W/s) feature map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return torch.relu(self.final_bn(x)) if self.spec.preact else x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> (N, num_classes) logits."""
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(x)
        return self.forward_head(self.forward_features(x))
