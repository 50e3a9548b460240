"""The networks under test: ours from the zoo, and torchvision's same network where it has one."""

from __future__ import annotations

from functools import cache

import torchvision
from torch import nn

from ..models import count_macs, create_model, get_entry


def ours(name: str) -> nn.Module:
    return create_model(name)


def torchvision_twin(name: str) -> nn.Module | None:
    """torchvision's randomly initialised network of the same name, or None if it has none."""
    if name not in torchvision.models.list_models(module=torchvision.models):
        return None
    return torchvision.models.get_model(name, weights=None)


def input_side(name: str, image_size: int) -> int:
    """CIFAR-stem nets run at their native size; the others at the configured size."""
    spec = get_entry(name).spec
    return spec.default_input_size if spec.stem == "cifar" else image_size


@cache
def macs_per_image(name: str, side: int) -> int:
    """Multiply-accumulates of our `name` for one 3 x side x side image (torchvision's twin is identical)."""
    return count_macs(ours(name), (3, side, side))
