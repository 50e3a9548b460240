"""The metadata our weights files carry beside their tensors (model, classes, input format, provenance): one
typed record for the writer (`train.checkpoint.save_weights`) and every reader (`read_meta`), here in
`models/` because a weights file is a model's, and `create_model(weights=FILE)` reads it too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from safetensors import safe_open

from ..typecheck import has_type


@dataclass(frozen=True)
class WeightsMeta:
    """What every weights file of a run carries beside its tensors, so evaluate/predict/export need only that
    file. One record for the writer (`save_weights`) and the readers (`read_meta` checks a file's values
    against these types, so a damaged or edited file fails by name)."""

    model: str
    num_classes: int
    in_channels: int
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_size: list[int]  # evaluation: centre-crop to this (H, W) ...
    resize: int  # ... after resizing the short side to this
    data: str
    shortcut: str | None
    spec_overrides: dict[str, Any] | None
    pretrained: str | None  # the URL a --weights NAME resolved to
    epoch: int


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata `save_weights` stored, or {} for a file without it (e.g. torchvision weights)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except FileNotFoundError:
        raise
    except Exception as e:  # SafetensorError: garbage, truncated or another format under the suffix
        raise ValueError(f"{path} is not a readable .safetensors file ({e})") from e
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return check_meta(path, out)


def check_meta(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` if every WeightsMeta key present has its type (and lists their lengths), else a ValueError naming
    the key. Files from elsewhere may carry only some keys, or others."""
    hints = get_type_hints(WeightsMeta)
    for key, hint in hints.items():
        if key in meta and not has_type(meta[key], hint):
            raise ValueError(f"{path}: metadata {key!r} is {meta[key]!r}, which is not a valid {key}; "
                             "the file was edited or damaged: re-export it from its run")  # fmt: skip
    if "image_size" in meta and (
        len(meta["image_size"]) != 2 or not all(isinstance(v, int) and v > 0 for v in meta["image_size"])
    ):
        raise ValueError(
            f"{path}: metadata 'image_size' must be two positive integers, got {meta['image_size']!r}"
        )
    channels = meta.get("in_channels")
    for key in ("mean", "std"):
        if key in meta and (
            len(meta[key]) != channels or not all(isinstance(v, (int, float)) for v in meta[key])
        ):
            raise ValueError(
                f"{path}: metadata {key!r} must hold one number per input channel, got {meta[key]!r}"
            )
    if "classes" in meta and "num_classes" in meta and len(meta["classes"]) != meta["num_classes"]:
        raise ValueError(
            f"{path}: metadata names {len(meta['classes'])} classes but says num_classes={meta['num_classes']}"
        )
    return meta
