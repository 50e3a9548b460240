"""The networks under test, as data: a zoo model by name or a trained run's model, with the input it takes,
and torchvision's same network where it has one."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torchvision
from torch import nn

from ..models import count_macs, create_model, get_entry

if TYPE_CHECKING:
    from .config import BenchConfig

DEFAULT_IMAGE_SIZE = 224  # the ImageNet nets' input side when none is given


@dataclass(frozen=True)
class Net:
    """One net under test: which architecture, whose weights (a run's file, or None for a fresh zoo model),
    and the input it is timed on. Building, sizing and feeding a model all read this, so a zoo model and a
    trained run take one code path."""

    name: str  # zoo architecture
    weights: Path | None = None  # one of our weights files: its head, channels and variant are kept
    in_channels: int = 3
    image_size: tuple[int, int] = (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)  # (H, W)
    cifar: bool = False  # timed as the CIFAR nets: naive vs fast training formats, at cifar_batch_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return (self.in_channels, *self.image_size)

    def inputs(self, batch: int, device: torch.device) -> torch.Tensor:
        """A random batch of `batch` images in this net's input format."""
        return torch.randn(batch, *self.input_shape, device=device)


def zoo_net(name: str, image_size: int | None = None, *, cifar: bool = False) -> Net:
    """Zoo model `name` with fresh weights: CIFAR-stem nets at their native size, the others at `image_size`
    (default 224)."""
    spec = get_entry(name).spec
    side = spec.default_input_size if spec.stem == "cifar" else image_size or DEFAULT_IMAGE_SIZE
    return Net(name, image_size=(side, side), cifar=cifar)


RUN_HINT = "give a run folder or one of the .safetensors files a run wrote (or zoo models with --models)"


def run_net(run: str | Path, image_size: int | None = None) -> Net:
    """The model a run trained, as it recorded it: architecture, weights (their head and variant), channels
    and evaluation crop; `image_size` replaces the crop with a square side. CIFAR-stem runs are timed as the
    CIFAR nets are (naive vs fast training formats)."""
    from ..models.metadata import read_meta
    from ..trained import load_trained, resolve_weights

    path = Path(run)
    if not path.exists():
        raise FileNotFoundError(f"{run} not found: {RUN_HINT}")
    try:
        weights = resolve_weights(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{run} is not a run folder (no best.safetensors or last.safetensors): "
                                f"{RUN_HINT}") from None  # fmt: skip
    name = read_meta(weights).get("model")
    if name is None:
        raise ValueError(f"{weights} is not a weights file of a run (it does not say which model it holds): "
                         f"{RUN_HINT}")  # fmt: skip
    trained = load_trained(weights)
    model = trained.model
    size = (image_size, image_size) if image_size else tuple(trained.image_size)
    return Net(name, weights, model.in_channels, size, model.spec.stem == "cifar")


def nets_under_test(config: BenchConfig) -> tuple[Net, ...]:
    """What `config` times: the run's model alone, else its ImageNet nets, then its CIFAR nets."""
    if config.run is not None:
        return (run_net(config.run, config.image_size),)
    return tuple(zoo_net(name, config.image_size) for name in config.models) + tuple(
        zoo_net(name, config.image_size, cifar=True) for name in config.cifar_models
    )


def net_fields(net: Net) -> dict[str, object]:
    """What a result row says of the net it timed: the model, its weights file (None: fresh zoo weights),
    and its input (a side when square, else [H, W])."""
    h, w = net.image_size
    return {"model": net.name, "weights": None if net.weights is None else str(net.weights),
            "channels": net.in_channels, "image_size": h if h == w else [h, w]}  # fmt: skip


def ours(net: Net) -> nn.Module:
    """Our model of `net`: the zoo's fresh one, or the run's trained one (its head, channels and variant)."""
    return create_model(net.name, in_channels=net.in_channels, weights=net.weights)


def torchvision_twin(net: Net) -> nn.Module | None:
    """torchvision's randomly initialised network of the same name, or None if it has none. A run's model has
    none: its head, channels or variant are its own, so the twin would time another network."""
    if net.weights is not None or net.name not in torchvision.models.list_models(module=torchvision.models):
        return None
    return torchvision.models.get_model(net.name, weights=None)


@cache
def macs_per_image(net: Net | str, side: int | None = None) -> int:
    """Multiply-accumulates of our `net` for one image of its input (torchvision's twin is identical); a zoo
    name and `side` mean that model at 3 x side x side."""
    if isinstance(net, str):
        if side is None:
            raise ValueError(f"macs_per_image({net!r}): give the image side with a model name")
        net = Net(net, image_size=(side, side))
    return count_macs(ours(net), net.input_shape)
