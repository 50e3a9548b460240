"""Crash-safe files: weights as safetensors with the run's metadata, and the full state for resuming.
Every file is written to a temporary name and renamed, so a kill never leaves a half-written file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

STATE_FILE = "state.pt"


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)`, then rename onto `path` (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


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
    return out


def save_state(run_dir: Path, state: dict[str, Any]) -> None:
    atomic_write(run_dir / STATE_FILE, lambda tmp: torch.save(state, tmp))


def load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)
