"""The backbone API for detection and segmentation, following timm's design: `create_model(name,
features_only=True, out_indices=...)` returns a `FeatureNet` whose forward gives the feature maps of the
chosen levels, and whose `feature_info` says their channels and strides (timm's `FeatureInfo`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .stems import check_image

if TYPE_CHECKING:
    from .resnet import ResNet


class FeatureInfo:
    """One dict per feature level, as timm: `num_chs` (channels), `reduction` (stride from the input) and
    `module` (the module that outputs it, a valid `create_feature_extractor` node name)."""

    def __init__(self, levels: Sequence[dict[str, Any]]) -> None:
        self.info = [dict(level) for level in levels]

    def channels(self, idx: int | None = None) -> list[int] | int:
        """Channels of every level, or of level `idx`."""
        return self._get("num_chs", idx)

    def reduction(self, idx: int | None = None) -> list[int] | int:
        """Stride from the input of every level, or of level `idx`."""
        return self._get("reduction", idx)

    def module_name(self, idx: int | None = None) -> list[str] | str:
        """Name of the module whose output is each level, or level `idx`."""
        return self._get("module", idx)

    def get_dicts(self) -> list[dict[str, Any]]:
        return [dict(level) for level in self.info]

    def _get(self, key: str, idx: int | None) -> Any:
        return [level[key] for level in self.info] if idx is None else self.info[idx][key]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return dict(self.info[idx])

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info})"


class FeatureNet(nn.Module):
    """A ResNet's trunk returning the feature maps of levels `out_indices` (0: the stem before its max-pool,
    i: stage i; pre-activation nets' last stage includes their final BN-ReLU) as a list of tensors.

    The modules keep the ResNet's names, so the state dict is the ResNet's without the head and the stages
    past the deepest level asked for.
    """

    def __init__(self, model: ResNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        stages = len(model.spec.layers)
        given = tuple(range(stages + 1)) if out_indices is None else tuple(out_indices)
        # as timm's: -1 is the last level
        out = tuple(i + stages + 1 if -stages - 1 <= i < 0 else i for i in given)
        if not out or list(out) != sorted(set(out)) or not 0 <= out[0] <= out[-1] <= stages:
            raise ValueError(
                f"out_indices must be increasing levels in 0..{stages} (0: stem, i: stage i; -1 the last), "
                f"got {given}"
            )
        self.in_channels, self.min_input_size = model.in_channels, model.min_input_size
        self.out_indices = out
        self.conv1, self.bn1, self.relu, self.maxpool = model.conv1, model.bn1, model.relu, model.maxpool
        self.num_stages = stages
        for i in range(1, out[-1] + 1):
            self.add_module(f"layer{i}", getattr(model, f"layer{i}"))
        if out[-1] == stages:
            self.final_bn, self.final_act = model.final_bn, model.final_act
        self.feature_info = FeatureInfo([model.feature_info[i] for i in out])
        self.register_forward_pre_hook(check_image)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))
        features = [x] if 0 in self.out_indices else []
        x = self.maxpool(x)
        for i in range(1, self.out_indices[-1] + 1):
            x = getattr(self, f"layer{i}")(x)
            if i == self.num_stages:
                x = self.final_act(self.final_bn(x))
            if i in self.out_indices:
                features.append(x)
        return features
