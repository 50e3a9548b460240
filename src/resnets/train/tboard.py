"""Optional TensorBoard logging: per-epoch metrics as event files in `<run>/tensorboard` when the
`tensorboard` package is installed, and silently nothing when it is not (it is not a dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TB_DIR = "tensorboard"


def open_writer(run_dir: Path) -> Any | None:
    """A SummaryWriter writing to `run_dir/tensorboard`, or None without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run_dir / TB_DIR))


def log_epoch(writer: Any | None, row: dict[str, Any]) -> None:
    """Write one metrics.csv row as scalars (loss/train, accuracy/test, ...) at its epoch."""
    if writer is None:
        return
    epoch = int(row["epoch"])
    for key, value in row.items():
        if key == "epoch" or value == "" or value is None:
            continue
        split, _, name = key.partition("_")
        tag = f"{name}/{split}" if split in ("train", "val", "test") else key
        writer.add_scalar(tag, float(value), epoch)
    writer.flush()
