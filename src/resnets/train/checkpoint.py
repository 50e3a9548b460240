"""Crash-safe run files: weights as safetensors with the run's metadata, and the full state for resuming.
Every file goes through `resnets.files.atomic_write`, so a kill never leaves a half-written file."""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..files import atomic_write
from ..models.metadata import WeightsMeta, check_meta

STATE_FILE = "state.pt"


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, meta: WeightsMeta | dict[str, Any]) -> None:
    """Weights plus their metadata (checked as `read_meta` will check it), written atomically."""
    values = asdict(meta) if isinstance(meta, WeightsMeta) else dict(meta)
    check_meta(path, values)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = {k: json.dumps(v) for k, v in values.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


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
