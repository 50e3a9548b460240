"""Crash-safe run files: weights as safetensors with the run's metadata, and the full state for resuming.
Every file goes through `resnets.files.atomic_write`, so a kill never leaves a half-written file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..files import atomic_write

STATE_FILE = "state.pt"


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, meta: dict[str, Any]) -> None:
    """Weights plus what is needed to use them alone (model name, classes, input format) as metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = {k: json.dumps(v) for k, v in meta.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


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


# the metadata our weights carry, with the types the readers rely on
META_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "num_classes": (int,), "in_channels": (int,), "classes": (list,), "mean": (list,),
    "std": (list,), "image_size": (list,), "data": (str,), "shortcut": (str, type(None)),
    "spec_overrides": (dict, type(None)), "epoch": (int,), "test_acc": (float, int), "resize": (int,),
}  # fmt: skip


def check_meta(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` if every known key has its type (and lists their lengths), else a ValueError naming the key."""
    for key, types in META_TYPES.items():
        if key in meta and (not isinstance(meta[key], types) or isinstance(meta[key], bool)):
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


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(run_dir / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_state(run_dir: Path) -> dict[str, Any]:
    """The checkpoint `save_state` wrote, read with `weights_only=True`: a file that would run code is refused."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        refused = "Weights only load failed" in str(e)
        raise ValueError(
            f"{path}: refused: it holds objects that could run code, so it was not written by resnets"
            if refused
            else f"{path} is empty or damaged, so the run cannot resume; start it again with --overwrite"
        ) from None
    missing = {"model", "optimizer", "epoch", "step", "history", "best_acc", "rng"} - set(
        state if isinstance(state, dict) else ()
    )
    if missing:
        raise ValueError(f"{path} is not a resnets checkpoint (missing {', '.join(sorted(missing))})")
    return state
