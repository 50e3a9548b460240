"""The one `ResNet` class: stem, stages of residual blocks, global average pool, classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .blocks import ResidualBlock
from .features import FeatureInfo
from .spec import EXPANSION, ResNetSpec
from .stems import check_image, stem_conv, stem_pool

if TYPE_CHECKING:
    from .pretrained import Pretrained


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
    `strict=True`. Global average pooling makes the network accept any input size, square or not: padded
    convolutions never shrink a side below 1 px (an unpadded stem sets a minimum: `min_input_size`). The backbone API follows timm: `forward_features`,
    `forward_head(x, pre_logits)`, `num_features`, `feature_info`, `get_classifier`, `reset_classifier`;
    `num_classes=0` returns the pooled (N, num_features) features.
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
        if num_classes < 0 or in_channels < 1:
            raise ValueError(f"need num_classes >= 0 and in_channels >= 1, got {num_classes}, {in_channels}")
        if not 0.0 <= drop_rate < 1.0 or not 0.0 <= stochastic_depth < 1.0:
            raise ValueError("drop_rate and stochastic_depth are probabilities in [0, 1)")
        self.spec = spec
        self.pretrained: Pretrained | None = None  # named weights loaded into it (as timm's pretrained_cfg)
        self.in_channels = in_channels
        self.min_input_size = spec.min_input_size
        self.num_features = spec.num_features

        self.conv1 = stem_conv(spec, in_channels)
        # pre-activation nets normalise at the start of each block, so the stem has no BN-ReLU; the unpadded
        # stem (fastbook's) has a BN and no ReLU
        self.bn1 = nn.Identity() if spec.preact else nn.BatchNorm2d(spec.stem_channels)
        self.relu = nn.Identity() if spec.preact or spec.stem == "unpadded" else nn.ReLU(inplace=True)
        self.maxpool = stem_pool(spec)
        # timm's feature_info: channels and stride (`reduction`) of each level a backbone returns, the stem's
        # first. The ImageNet stems halve the image, then max-pool; the CIFAR stem keeps full resolution.
        reduction = 1 if spec.stem == "cifar" else 2
        levels = [{"num_chs": spec.stem_channels, "reduction": reduction, "module": "relu"}]
        reduction *= 1 if spec.stem == "cifar" else 2

        # stochastic depth grows linearly with the block index (Huang et al. 2016)
        total = sum(spec.layers)
        rates = [stochastic_depth * i / max(total - 1, 1) for i in range(total)]
        channels = spec.stem_channels
        for s, (planes, blocks) in enumerate(zip(spec.widths, spec.layers, strict=True)):
            done = sum(spec.layers[:s])
            stride = 1 if s == 0 else 2
            self.add_module(
                f"layer{s + 1}",
                make_stage(spec, channels, planes, blocks, stride, rates[done : done + blocks]),
            )
            channels = planes * EXPANSION[spec.block]
            reduction *= stride
            levels.append({"num_chs": channels, "reduction": reduction, "module": f"layer{s + 1}"})

        # v2 ends with a BN-ReLU, since its blocks output un-normalised sums
        self.final_bn = nn.BatchNorm2d(channels) if spec.preact else nn.Identity()
        self.final_act = nn.ReLU() if spec.preact else nn.Identity()
        if spec.preact:
            levels[-1]["module"] = "final_act"
        self.feature_info = FeatureInfo(levels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.reset_classifier(num_classes)
        self.reset_parameters(zero_init_residual)
        self.register_forward_pre_hook(check_image)  # at the edge, not in forward: see check_image

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.spec.layers))]

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """He init for convs (fan-out, as torchvision) unless the spec keeps PyTorch's defaults, BN to identity,
        optionally zero-init each block's end."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and self.spec.init == "he":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, ResidualBlock):
                    m.zero_init_last()

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for `num_classes` classes (PyTorch's default Linear init); 0 removes it."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        """The classifier, `fc` (as timm's): a Linear, or an Identity with num_classes=0."""
        return self.fc

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) image -> (N, num_features, H/s, W/s) feature map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return self.final_act(self.final_bn(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature map -> (N, num_classes) logits, or the pooled (N, num_features) with `pre_logits`."""
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
