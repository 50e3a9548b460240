"""Folding eval-mode BatchNorm into the convolution before it: fewer ops and memory passes at inference."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..models import ResNet
from ..models.blocks import ResidualBlock


def _fold(conv_owner: nn.Module, conv_name: str, bn_owner: nn.Module, bn_name: str) -> None:
    """Replace conv by conv+bn (with a bias) and the BN by an identity; both are looked up by name."""
    conv, bn = getattr(conv_owner, conv_name), getattr(bn_owner, bn_name)
    if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
        setattr(conv_owner, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(bn_owner, bn_name, nn.Identity())


def _fold_sequential(seq: nn.Sequential) -> None:
    """Fold each conv -> BN pair inside a Sequential (deep stem, projection shortcuts)."""
    for i in range(len(seq) - 1):
        _fold(seq, str(i), seq, str(i + 1))


def fuse_bn(model: ResNet) -> ResNet:
    """An eval-mode copy of `model` with every BatchNorm that directly follows a conv folded into it.

    Post-activation nets lose all their BNs (stem, deep stem, blocks, projection shortcuts). In
    pre-activation nets (v2) a block's first BN normalises the block input, which also feeds the shortcut,
    and `final_bn` normalises a sum; no conv precedes them, so they stay. The block's inner BNs (conv ->
    BN -> ReLU -> conv) fold into the conv before them, which is exact.
    """
    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        if isinstance(module, nn.Sequential):
            _fold_sequential(module)
    if isinstance(fused.conv1, nn.Sequential):
        _fold(fused.conv1, str(len(fused.conv1) - 1), fused, "bn1")
    else:
        _fold(fused, "conv1", fused, "bn1")
    for block in list(fused.modules()):
        if not isinstance(block, ResidualBlock):
            continue
        for i in range(1, block.num_convs + 1):
            if not block.preact:
                _fold(block, f"conv{i}", block, f"bn{i}")
            elif i > 1:
                _fold(block, f"conv{i - 1}", block, f"bn{i}")
    return fused
