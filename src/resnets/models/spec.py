"""The declarative description of a ResNet: every variant in the zoo is one `ResNetSpec`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args, get_origin, get_type_hints

BlockKind = Literal["basic", "bottleneck"]
# "unpadded": the ImageNet stem's 7x7/2 conv and 3x3/2 max-pool without padding and without a ReLU between
# them (BN only), as fastbook's Imagenette ResNet-34 builds it
StemKind = Literal["imagenet", "deep", "cifar", "unpadded"]
# A: zero-pad identity; B: projection only where the shape changes; C: projection in every block;
# "none": no skip connection at all (the paper's plain nets).
ShortcutKind = Literal["A", "B", "C", "none"]
# "he": He et al.'s fan-out init of every conv (torchvision's); "torch": each layer keeps PyTorch's default
# init, as a net built from plain layers with no init function does (d2l's)
InitKind = Literal["he", "torch"]

EXPANSION = {"basic": 1, "bottleneck": 4}


@dataclass(frozen=True)
class ResNetSpec:
    """Architecture of one network; the `ResNet` class builds exactly what this says."""

    block: BlockKind
    layers: tuple[int, ...]  # blocks per stage
    widths: tuple[int, ...] = (64, 128, 256, 512)  # "planes" per stage; bottleneck output = 4x
    stem: StemKind = "imagenet"
    stem_width: int = 32  # inner width of the deep stem (v1c/v1d), ignored otherwise
    shortcut: ShortcutKind = "B"
    avg_down: bool = False  # v1d: 2x2 avg-pool then stride-1 1x1 projection (Bag of Tricks, He et al. 2019)
    stride_in_1x1: bool = False  # v1: stride in the bottleneck's first 1x1 (paper, Caffe); v1.5: in the 3x3
    preact: bool = False  # v2: BN-ReLU-conv (He et al. 2016, "Identity Mappings")
    groups: int = 1  # ResNeXt cardinality
    base_width: int = 64  # ResNeXt/Wide ResNet: bottleneck width = planes * base_width/64 * groups
    conv_bias: bool = False  # every conv carries a bias, though a BN follows it (d2l's layers do)
    projection_norm: bool = True  # BN after a 1x1 projection shortcut (d2l's projection is a bare conv)
    init: InitKind = "he"

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.widths):
            raise ValueError(f"spec has {len(self.layers)} stages but {len(self.widths)} widths")
        if self.block not in EXPANSION:
            raise ValueError(f"block must be 'basic' or 'bottleneck', not {self.block!r}")
        if self.shortcut not in ("A", "B", "C", "none"):
            raise ValueError(f"shortcut must be 'A', 'B', 'C' or 'none', not {self.shortcut!r}")
        if self.block == "basic" and (self.groups != 1 or self.base_width != 64):
            raise ValueError("grouped/wide convolutions need bottleneck blocks (as in torchvision)")

    @property
    def residual(self) -> bool:
        return self.shortcut != "none"

    @property
    def stem_channels(self) -> int:
        """Channels out of the stem: the first stage's input."""
        return 16 if self.stem == "cifar" else 64

    @property
    def num_features(self) -> int:
        """Channels into the classifier."""
        return self.widths[-1] * EXPANSION[self.block]

    @property
    def depth(self) -> int:
        """Weighted layers, counted as in the paper (convs on the main path, stem and classifier)."""
        per_block = 2 if self.block == "basic" else 3
        return per_block * sum(self.layers) + 2

    @property
    def min_input_size(self) -> int:
        """The smallest side the net takes: 1 px where every conv and pool is padded; the unpadded stem's 7x7/2
        conv and 3x3/2 max-pool need 11 px."""
        return 11 if self.stem == "unpadded" else 1

    @property
    def default_input_size(self) -> int:
        """The side the network was designed for: CIFAR's 32 px for the CIFAR stem, ImageNet's 224 px else."""
        return 32 if self.stem == "cifar" else 224

    def with_(self, **changes: object) -> ResNetSpec:
        """This spec with `changes`; an unknown field or a value of the wrong type is a ValueError naming it
        (spec overrides arrive from the command line and from weights files)."""
        hints = get_type_hints(ResNetSpec)
        for name, value in changes.items():
            if name not in hints:
                raise ValueError(f"unknown ResNetSpec field {name!r}; fields: {', '.join(hints)}")
            if not _fits(value, hints[name]):
                raise ValueError(f"ResNetSpec field {name!r} cannot be {value!r}")
        return replace(self, **changes)


def _fits(value: object, hint: object) -> bool:
    """Whether `value` has the type `hint` describes (Literal choices, tuple[int, ...], int, bool)."""
    if get_origin(hint) is Literal:
        return value in get_args(hint)
    if get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0
    return isinstance(value, hint)
