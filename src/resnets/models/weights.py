"""Loading weights in our layout, torchvision's or timm's, detected from the key names: from a local file
(`load_weights`) or from a state dict already in memory (`load_state`, as named weights are)."""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")  # .bin: Hugging Face's pytorch_model.bin


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a `.safetensors` or `.pth`/`.pt`/`.bin` file. Pickles are read with `weights_only=True`, so a
    file that would run code is refused. Training checkpoints (`{"model": ...}`) are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: unsupported weights format {path.suffix!r}; use one of {WEIGHT_SUFFIXES}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as e:
            raise ValueError(f"{path}: not a readable .safetensors file ({e}); is it complete?") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in str(e):
            raise ValueError(
                f"{path}: refused to load: the file holds more than tensors and could run code. "
                "Re-save it as a plain state dict or as .safetensors."
            ) from e
        raise ValueError(f"{path}: not a readable PyTorch weights file ({reason}); is it complete?") from e
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


_TIMM_V2 = [
    (re.compile(r"^stem\.conv\."), "conv1."),
    (
        re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.norm(\d)\."),
        lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{m[3]}.",
    ),
    (
        re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.downsample\.conv\."),
        lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0.",
    ),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\."), lambda m: f"layer{int(m[1]) + 1}.{m[2]}."),
    (re.compile(r"^norm\."), "final_bn."),
    (re.compile(r"^head\.fc\."), "fc."),
]


def to_our_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename foreign layouts: DataParallel's `module.` prefix, timm's `resnetv2_*` (pre-activation) and the
    common CIFAR reproductions' `linear` classifier. torchvision's and timm's `resnet*` already match."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(("stages.", "stem.")) for k in state):
        renamed = {}
        for key, value in state.items():
            for pattern, repl in _TIMM_V2:
                new = pattern.sub(repl, key, count=1)
                if new != key:
                    key = new
                    break
            if key == "fc.weight" and value.ndim == 4:  # timm's head is a 1x1 conv
                value = value.flatten(1)
            renamed[key] = value
        state = renamed
    if "linear.weight" in state and "fc.weight" not in state:
        state = {("fc." + k[len("linear.") :] if k.startswith("linear.") else k): v for k, v in state.items()}
    return state


def _adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Reuse RGB stem filters for another channel count: sum them for grayscale, else tile and rescale
    (the rule of timm's `adapt_input_conv`, which this follows)."""
    have = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // have)
    return weight.repeat(1, reps, 1, 1)[:, :in_channels] * (have / in_channels)


def classifier_size(state: Mapping[str, torch.Tensor]) -> int | None:
    """How many classes the weights `state` predict (None when they hold no classifier)."""
    fc = to_our_layout(dict(state)).get("fc.weight")
    return None if fc is None else int(fc.shape[0])


def load_weights(model: nn.Module, path: str | Path, new_head: bool = True) -> None:
    """Load the file `path` into `model` as `load_state` does."""
    load_state(model, read_state_dict(path), str(path), new_head)


def load_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, new_head: bool = True
) -> None:
    """Load `state` into `model` strictly, after renaming; tells (with a warning) what it had to adapt:
    a new classifier for a different class count (only with `new_head`, as fine-tuning wants; elsewhere
    a classifier that does not fit is an error, never a silent random one), a stem for a different channel
    count, or the projection shortcuts a plain net does not have. `source` names the weights in messages."""
    state = to_our_layout(dict(state))
    own = model.state_dict()
    notes = []
    if "fc.weight" not in own:  # num_classes=0 or a feature backbone: no classifier to load into (as timm)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "fc.weight" in state and "fc.weight" in own and state["fc.weight"].shape != own["fc.weight"].shape:
        if not new_head:
            raise ValueError(
                f"{source} predicts {state['fc.weight'].shape[0]} classes, not {own['fc.weight'].shape[0]}: "
                "leave out --num-classes (it defaults to the file's classifier) or fine-tune with `train`"
            )
        state.pop("fc.weight")
        state.pop("fc.bias", None)
        state["fc.weight"], state["fc.bias"] = own["fc.weight"], own["fc.bias"]
        notes.append(f"classifier re-initialised for {own['fc.weight'].shape[0]} classes")
    stem_key = "conv1.weight" if "conv1.weight" in own else "conv1.0.weight"
    if stem_key in state and state[stem_key].shape[1] != own[stem_key].shape[1]:
        state[stem_key] = _adapt_input_conv(state[stem_key], own[stem_key].shape[1])
        notes.append(f"stem adapted to {own[stem_key].shape[1]} input channel(s)")
    dropped = [k for k in state if ".downsample." in k and k not in own]
    if dropped and not any(".downsample." in k for k in own):
        for k in dropped:
            state.pop(k)
        notes.append(f"ignored {len(dropped)} projection-shortcut tensors (this net has no skip connections)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{source} does not fit this model: {e}") from e
    if notes:
        warnings.warn(f"{Path(source).name}: " + "; ".join(notes), stacklevel=2)
