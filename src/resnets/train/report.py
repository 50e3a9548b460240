"""The Markdown report of a training run, with its plots."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from ..data import DataBundle
from ..files import atomic_write_text
from .config import TrainConfig
from .plots import plot_confusion, plot_curves

MAX_DROPPED_LISTED = 100


def dropped_section(bundle: DataBundle) -> str:
    """The report's list of images left out of the data and why, so they can be fixed; empty if none."""
    if not bundle.dropped:
        return ""
    lines = [f"\n## Images left out ({len(bundle.dropped)})\n", "| file | why |", "|---|---|"]
    lines += [
        f"| `{path}` | {reason.replace('|', '/')} |" for path, reason in bundle.dropped[:MAX_DROPPED_LISTED]
    ]
    if len(bundle.dropped) > MAX_DROPPED_LISTED:
        lines.append(f"\nand {len(bundle.dropped) - MAX_DROPPED_LISTED} more.")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, cfg: TrainConfig, bundle: DataBundle, history) -> Path:
    """report.md + curves.png + confusion.png in the run folder; returns the report's path."""
    plot_curves(history.epochs, run_dir / "curves.png")
    final = history.final
    plot_confusion(final.confusion, bundle.classes, run_dir / "confusion.png")
    last = history.epochs[-1]
    top5 = f" | top-5 {100 * final.top5:.2f}%" if final.top5 is not None else ""
    rows = "\n".join(
        f"| {e['epoch']} | {e['train_loss']:.4f} | {100 * e['train_acc']:.2f} | {e['test_loss']:.4f} | "
        f"{100 * e['test_acc']:.2f} | {e['lr']:.4f} | {e['seconds']:.0f} |"
        for e in history.epochs
    )
    text = f"""# Training report: {cfg.model} on {bundle.name}

**Test accuracy {100 * last["test_acc"]:.2f}%** after {last["epoch"]} epochs{top5} (best {100 * history.best_acc:.2f}%),
{history.seconds / 60:.1f} minutes of training (data loading and evaluation included).

- Data: {bundle.name}, {len(bundle.train)} training / {len(bundle.test)} test images, {bundle.num_classes} classes,
  {bundle.channels} channel(s), {bundle.image_size[0]}x{bundle.image_size[1]} px{f", {bundle.skipped} corrupt images skipped" if bundle.skipped else ""}
- Recipe: {cfg.optimizer.upper()} lr {cfg.lr if cfg.lr else "auto"} ({cfg.schedule}), batch {cfg.batch_size},
  weight decay {cfg.weight_decay}, label smoothing {cfg.label_smoothing}, crop padding {cfg.augment().crop_padding},
  flip {cfg.flip}, cutout {cfg.cutout}, mixup {cfg.mixup}, precision {cfg.precision}, seed {cfg.seed}
- Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}
- Full configuration: `config.json`; per-epoch numbers: `metrics.csv`; weights: `best.safetensors`, `last.safetensors`

![curves](curves.png)

| epoch | train loss | train acc % | test loss | test acc % | lr | seconds |
|---:|---:|---:|---:|---:|---:|---:|
{rows}

## Per-class results (last epoch)

```
{final.per_class_table(bundle.classes)}
```

![confusion matrix](confusion.png)
{dropped_section(bundle)}
Resume an interrupted run with `resnets train --resume {run_dir}`.
"""
    path = run_dir / "report.md"
    atomic_write_text(path, text)
    return path
