"""Named configurations: every model in the zoo is one line of data here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any, Literal, overload

import torch

from ..typecheck import checked
from .features import FeatureNet
from .metadata import read_meta
from .pretrained import (
    TIMM_PREFIX,
    Pretrained,
    file_record,
    is_weights_name,
    load_pretrained,
    pretrained_name,
    resolve_weights_name,
    timm_arch,
)
from .pretrained import named_weights as pretrained_named_weights
from .resnet import ResNet
from .spec import ResNetSpec, ShortcutKind
from .weights import classifier_size, load_state, read_state_dict


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its architecture, default class count and a one-line description."""

    spec: ResNetSpec
    num_classes: int
    description: str


_REGISTRY: dict[str, ModelEntry] = {}

IMAGENET_LAYERS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
CIFAR_WIDTHS = (16, 32, 64)


def register(name: str, spec: ResNetSpec, description: str, num_classes: int = 1000) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(spec, num_classes, description)


def _imagenet_block(depth: int) -> str:
    return "basic" if depth < 50 else "bottleneck"


# ImageNet ResNets, paper Table 1, in torchvision's v1.5 layout (stride in the 3x3)
for d in (18, 34, 50, 101, 152):
    register(
        f"resnet{d}", ResNetSpec(_imagenet_block(d), IMAGENET_LAYERS[d]), f"ResNet-{d} (v1.5, torchvision)"
    )
# d2l's ResNet-18 (Dive into Deep Learning, section 8.6), layer for layer: its convs carry biases, its 1x1
# projections have no BN, and no init function touches its layers
register(
    "d2l_resnet18",
    ResNetSpec("basic", IMAGENET_LAYERS[18], conv_bias=True, projection_norm=False, init="torch"),
    "ResNet-18 as d2l 8.6 builds it (conv biases, bare 1x1 projections, PyTorch's default init)",
    num_classes=10,
)
# fastbook's Imagenette ResNet-34 (the seed's custom_resnet([3, 4, 6, 3], ...)), layer for layer: unpadded 7x7/2
# stem conv and 3x3/2 max-pool with no ReLU between, convs with biases, BN on the 1x1 projections, no init
register(
    "fastbook_resnet34",
    ResNetSpec("basic", IMAGENET_LAYERS[34], stem="unpadded", conv_bias=True, init="torch"),
    "ResNet-34 as fastbook's Imagenette chapter builds it (unpadded stem without ReLU, conv biases, "
    "PyTorch's default init)",
    num_classes=10,
)
# the original v1: stride in the bottleneck's first 1x1
for d in (50, 101, 152):
    register(
        f"resnet{d}_v1",
        ResNetSpec("bottleneck", IMAGENET_LAYERS[d], stride_in_1x1=True),
        f"ResNet-{d} v1 (stride in the 1x1, as the paper)",
    )
# v1c: deep stem; v1d: deep stem + avg-pool projection shortcut (timm names)
register("resnet50c", ResNetSpec("bottleneck", IMAGENET_LAYERS[50], stem="deep"), "ResNet-50-C (deep stem)")
for d in (18, 34, 50, 101, 152):
    register(
        f"resnet{d}d",
        ResNetSpec(_imagenet_block(d), IMAGENET_LAYERS[d], stem="deep", avg_down=True),
        f"ResNet-{d}-D (deep stem, avg-pool shortcut)",
    )
# v2 pre-activation
for d in (18, 34, 50, 101, 152):
    register(
        f"preact_resnet{d}",
        ResNetSpec(_imagenet_block(d), IMAGENET_LAYERS[d], preact=True),
        f"Pre-activation ResNet-{d} (v2)",
    )
# ResNeXt and Wide ResNet (torchvision's)
for name, d, groups, width in (
    ("resnext50_32x4d", 50, 32, 4),
    ("resnext101_32x8d", 101, 32, 8),
    ("resnext101_64x4d", 101, 64, 4),
):
    register(
        name,
        ResNetSpec("bottleneck", IMAGENET_LAYERS[d], groups=groups, base_width=width),
        f"ResNeXt-{d} {groups}x{width}d",
    )
for d in (50, 101):
    register(
        f"wide_resnet{d}_2",
        ResNetSpec("bottleneck", IMAGENET_LAYERS[d], base_width=128),
        f"Wide ResNet-{d}-2 (2x bottleneck width)",
    )
# CIFAR ResNets, paper section 4.2: 6n+2 layers, option A shortcuts
for depth in (20, 32, 44, 56, 110, 1202):
    n = (depth - 2) // 6
    register(
        f"cifar_resnet{depth}",
        ResNetSpec("basic", (n, n, n), CIFAR_WIDTHS, stem="cifar", shortcut="A"),
        f"CIFAR ResNet-{depth} (6n+2, n={n}, option A)",
        num_classes=10,
    )
# CIFAR pre-activation nets (He et al. 2016): 110 basic; 164 and 1001 bottleneck (9n+2)
register(
    "cifar_preact_resnet110",
    ResNetSpec("basic", (18, 18, 18), CIFAR_WIDTHS, stem="cifar", preact=True),
    "CIFAR pre-activation ResNet-110",
    num_classes=10,
)
for depth in (164, 1001):
    n = (depth - 2) // 9
    register(
        f"cifar_preact_resnet{depth}",
        ResNetSpec("bottleneck", (n, n, n), CIFAR_WIDTHS, stem="cifar", preact=True),
        f"CIFAR pre-activation ResNet-{depth} (bottleneck, n={n})",
        num_classes=10,
    )
# plain twins: the same layers with no skip connections (paper Figure 6)
for d in (18, 34):
    register(f"plain{d}", ResNetSpec("basic", IMAGENET_LAYERS[d], shortcut="none"), f"Plain-{d} (no skips)")
for depth in (20, 32, 44, 56, 110):
    n = (depth - 2) // 6
    register(
        f"cifar_plain{depth}",
        ResNetSpec("basic", (n, n, n), CIFAR_WIDTHS, stem="cifar", shortcut="none"),
        f"CIFAR Plain-{depth} (no skips)",
        num_classes=10,
    )


@checked
def list_models(pattern: str | None = None, pretrained: bool = False) -> list[str]:
    """Every registered model name, sorted. `pattern` keeps the names matching it: a shell-style wildcard as
    timm's ("*50*", "resnet5?"), or without one (`*?[`) a part of the name ("cifar_plain"). `pretrained=True`
    keeps the models that have named weights (those `create_model(name, pretrained=True)` takes)."""
    names = sorted(_REGISTRY)
    if pattern is not None:
        wildcard = any(c in pattern for c in "*?[")
        names = (
            [n for n in names if fnmatchcase(n, pattern)] if wildcard else [n for n in names if pattern in n]
        )
    return [n for n in names if pretrained_name(n) is not None] if pretrained else names


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`, or a ValueError that suggests close names."""
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}.{hint} See `resnets list` for all {len(_REGISTRY)} names.")
    return _REGISTRY[name]


def resolve_spec(
    name: str, shortcut: ShortcutKind | None = None, spec_overrides: Mapping[str, Any] | None = None
) -> ResNetSpec:
    """`name`'s registered spec with `shortcut` and `spec_overrides` applied: the one rule for overrides
    (conflicting values raise, as torchvision's `_ovewrite_named_param`), used wherever a spec is built."""
    spec = get_entry(name).spec
    if shortcut is not None and shortcut != spec.shortcut:
        if not spec.residual:
            raise ValueError(
                f"{name} is a plain net without skip connections; shortcut={shortcut!r} conflicts"
            )
        if shortcut not in ("A", "B", "C"):
            raise ValueError(f"shortcut must be 'A', 'B' or 'C', not {shortcut!r}")
        spec = spec.with_(shortcut=shortcut)
    if spec_overrides and shortcut is not None and spec_overrides.get("shortcut", shortcut) != shortcut:
        raise ValueError(
            f"shortcut={shortcut!r} conflicts with spec_overrides' {spec_overrides['shortcut']!r}"
        )
    if spec_overrides:  # lists (from JSON) become the spec's tuples
        spec = spec.with_(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec_overrides.items()})
    return spec


def resolve_name(
    name: str, weights: str | Path | None = None, pretrained: bool | None = None
) -> tuple[str, str | Path | None]:
    """timm's ways of asking for weights, in ours: (model, weights). A tagged name, "resnet50d.ra2_in1k", is
    resnet50d with timm's weights "timm:ra2_in1k" (`pretrained=False` keeps the architecture only, as timm);
    `pretrained=True` gives the model's default weights (`pretrained_name`). Checks the model name, builds
    nothing."""
    model, _, tag = name.partition(".")
    ours = [n for n in _REGISTRY if tag and n != model and timm_arch(n) == model]
    if ours:  # timm's name for one of ours: resnetv2_50 is preact_resnet50
        raise ValueError(f"timm's {model} is {ours[0]} here: say '{ours[0]}.{tag}'")
    get_entry(model)
    chosen = f"{name!r} (timm's weights {tag!r})" if tag else f"pretrained=True ({model}'s default weights)"
    if weights is not None and (tag or pretrained):
        raise ValueError(f"{chosen} and weights={str(weights)!r} both choose weights: give one of them")
    if tag:
        return model, None if pretrained is False else TIMM_PREFIX + tag
    return model, _default_weights(model) if pretrained else weights


def _default_weights(model: str) -> str:
    """The weights `pretrained=True` loads into `model`, or a ValueError naming the models that have some."""
    found = pretrained_name(model)
    if found is None:
        import importlib.util

        have = ", ".join(list_models(pretrained=True))
        extra = "" if importlib.util.find_spec("timm") else " (more with pip install 'resnets[pretrained]')"
        raise ValueError(
            f"{model} has no pretrained weights; pretrained=True works for {have}{extra}. "
            f"For {model}, give a local file: weights='path/to/weights.pth'"
        )
    return found


def _read_file(name: str, weights: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A weights file's tensors and metadata (ours carry the model, classes and input format; others none)."""
    meta = read_meta(weights)
    if meta.get("model", name) != name:
        raise ValueError(
            f"{weights} holds a {meta['model']}, not a {name}: create_model({meta['model']!r}, weights=...), "
            f"or resnets.load({str(weights)!r}), which reads the model from the file"
        )
    return read_state_dict(weights), meta


def _either(ours: str, our_value: Any, timms: str, timm_value: Any, default: Any) -> Any:
    """An option given by our name or by timm's, not by both."""
    if our_value is not None and timm_value is not None:
        raise ValueError(f"{timms}= is timm's name for {ours}=: give one of them, not both")
    if our_value is not None:
        return our_value
    return default if timm_value is None else timm_value


@overload
def create_model(name: str, num_classes: int | None = None, in_channels: int | None = None, *,
                 features_only: Literal[False] = False, **options: Any) -> ResNet: ...  # fmt: skip
@overload
def create_model(name: str, num_classes: int | None = None, in_channels: int | None = None, *,
                 features_only: Literal[True], **options: Any) -> FeatureNet: ...  # fmt: skip


@checked(
    advice={
        "num_classes": "the second argument is num_classes here (timm's is pretrained); say pretrained=..."
    }
)
def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    *,
    pretrained: bool | None = None,
    weights: str | Path | None = None,
    shortcut: ShortcutKind | None = None,
    zero_init_residual: bool = False,
    drop_rate: float = 0.0,
    stochastic_depth: float | None = None,
    spec_overrides: Mapping[str, Any] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    in_chans: int | None = None,
    drop_path_rate: float | None = None,
) -> ResNet | FeatureNet:
    """Build a zoo model by name, optionally loading a local weights file.

    `num_classes` defaults to the model's own (1000 for ImageNet nets, 10 for CIFAR nets); 0 gives a model
    that returns pooled features. `in_channels` defaults to 3. `shortcut` overrides the skip connection ("A",
    "B", "C"); plain twins have none and refuse it. `spec_overrides` changes other `ResNetSpec` fields (e.g.
    {"layers": [2, 2, 2]}) for variants outside the zoo. `weights` is a local `.pth`/`.pt`/`.safetensors` file
    in our, torchvision's or timm's layout, or a name: torchvision's ("DEFAULT", "IMAGENET1K_V1", ...) or
    timm's ("timm:ra2_in1k"), downloaded once into the library's cache (`resnets weights` lists them), kept
    as `model.pretrained` (classes, preprocessing) and giving the default `num_classes`. A file's own
    classifier is the default `num_classes` (a trained head is kept); one of our runs' files also gives the
    channels and variant, and its classes and preprocessing become `model.pretrained`. `features_only=True`
    returns a `FeatureNet` (timm's backbone API): the feature maps of levels `out_indices` (default all: 0
    the stem, i stage i) as a list, described by `feature_info`.

    timm's vocabulary works too: `pretrained=True` (the model's default weights), a tagged name
    ("resnet50d.ra2_in1k": weights "timm:ra2_in1k"), `in_chans` for `in_channels` and `drop_path_rate` for
    `stochastic_depth`.
    """
    if out_indices is not None and not features_only:
        raise ValueError("out_indices selects feature levels; it needs features_only=True")
    if features_only and num_classes:
        raise ValueError(f"features_only=True has no classifier; num_classes={num_classes} conflicts")
    name, weights = resolve_name(name, weights, pretrained)
    entry = get_entry(name)
    named = resolve_weights_name(name, str(weights)) if weights and is_weights_name(weights) else None
    state, meta = _read_file(name, weights) if weights is not None and named is None else (None, {})
    # the weights' own classifier, channels and variant are the defaults: a trained head is kept, not replaced
    if num_classes is None:
        num_classes = len(named.categories) if named else classifier_size(state or {}) or entry.num_classes
    in_channels = _either("in_channels", in_channels, "in_chans", in_chans, meta.get("in_channels", 3))
    stochastic_depth = _either("stochastic_depth", stochastic_depth, "drop_path_rate", drop_path_rate, 0.0)
    spec = resolve_spec(name, meta.get("shortcut") if shortcut is None else shortcut,
                        meta.get("spec_overrides") if spec_overrides is None else spec_overrides)  # fmt: skip
    model = ResNet(
        spec,
        num_classes=0 if features_only else num_classes,
        in_channels=in_channels,
        zero_init_residual=zero_init_residual,
        drop_rate=drop_rate,
        stochastic_depth=stochastic_depth,
    )
    if named is not None:
        load_pretrained(model, named)
    elif state is not None:
        load_state(model, state, str(weights))
        model.pretrained = file_record(name, Path(weights), meta)
    return FeatureNet(model, out_indices) if features_only else model


@cache
def _state_mib(model: str, num_classes: int) -> float:
    """The size of `model`'s state dict in MiB, what its float32 weights file holds (built on the meta
    device: nothing is allocated)."""
    with torch.device("meta"):
        state = create_model(model, num_classes=num_classes).state_dict()
    return sum(t.numel() * t.element_size() for t in state.values()) / 2**20


def named_weights(model: str) -> list[Pretrained]:
    """`pretrained.named_weights`, each with its file size (from the model where the source gives none)."""
    return [
        r if r.size_mb is not None else replace(r, size_mb=_state_mib(model, len(r.categories)))
        for r in pretrained_named_weights(model)
    ]
