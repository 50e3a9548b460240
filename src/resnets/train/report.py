"""The Markdown report of a training run, with its plots."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data import DataBundle
from ..data.load import is_streamed
from ..files import atomic_write_text
from ..interpret import most_confused
from ..machine import cpu_model
from ..provenance import git_state, invocation
from .config import TrainConfig
from .folder import CONFUSION, CURVES, REPORT, ROC_PR, RUNTIME, TOP_LOSSES
from .plots import plot_confusion, plot_curves, plot_roc_pr, plot_top_losses

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


def resolved(run_dir: Path) -> str:
    """Device, precision and layout the run resolved (runtime.json), in words."""
    path = run_dir / RUNTIME
    if not path.is_file():
        return "recorded in config.json"
    r = json.loads(path.read_text())
    return f"{r['precision']} on {r['device']}{', channels_last' if r['channels_last'] else ''}"


def fmt(value: object, scale: float = 1.0, digits: int = 4) -> str:
    """A metric for a table: blank when not measured."""
    return "" if value in ("", None) else f"{scale * float(value):.{digits}f}"


def metrics_section(history) -> str:  # noqa: ANN001 (History: report is imported by run)
    """Test metrics of the final model (and the validation split's, which selected it)."""
    rows = [("test", history.final)] + ([("validation", history.val)] if history.val is not None else [])
    lines = [
        "| split | accuracy % | balanced accuracy % | macro-F1 | ROC-AUC | PR-AUC | loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {fmt(r.top1, 100, 2)} | {fmt(r.balanced_accuracy, 100, 2)} | {fmt(r.macro_f1)} | "
                     f"{fmt(r.roc_auc)} | {fmt(r.pr_auc)} | {fmt(r.loss)} |")  # fmt: skip
    for key, op in history.operating.items():
        how = "chosen on validation by Youden's J" if key == "youden" else "from --threshold"
        lines.append(f"\nTest sensitivity {100 * op.sensitivity:.1f}%, specificity {100 * op.specificity:.1f}% at "
                     f"threshold {op.threshold:.3f} ({how}).")  # fmt: skip
    return "\n".join(lines)


def mistakes_section(run_dir: Path, bundle: DataBundle, history) -> str:  # noqa: ANN001
    """The most-confused class pairs and the test images with the highest loss (a picture and a table)."""
    pairs = most_confused(history.final.confusion)
    lines = ["\n## What it gets wrong\n"]
    if pairs:
        lines += ["| true | predicted as | images |", "|---|---|---:|"]
        lines += [f"| {bundle.classes[t]} | {bundle.classes[p]} | {n} |" for t, p, n in pairs]
    if history.mistakes:
        images = [shown_test_image(bundle, m.index) for m in history.mistakes]
        plot_top_losses(images, history.mistakes, bundle.classes, run_dir / TOP_LOSSES)
        lines += ["\nTest images with the highest loss (true / predicted, probability of the prediction):\n",
                  "![top losses](top_losses.png)\n", "| image | true | predicted | probability | loss |",
                  "|---|---|---|---:|---:|"]  # fmt: skip
        for m in history.mistakes:
            where = bundle.test.samples[m.index][0] if hasattr(bundle.test, "samples") else f"test #{m.index}"
            lines.append(f"| `{where}` | {bundle.classes[m.true]} | {bundle.classes[m.predicted]} | "
                         f"{m.probability:.3f} | {m.loss:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n" if len(lines) > 1 else ""


def shown_test_image(bundle: DataBundle, index: int) -> torch.Tensor:
    """Test image `index` as uint8 (C, H, W), as the model saw it (folders: the evaluation crop)."""
    split = bundle.test
    return split.images[index] if hasattr(split, "images") else split[index][0]


def write_report(run_dir: Path, cfg: TrainConfig, bundle: DataBundle, history) -> Path:
    """report.md + curves.png + confusion.png (+ ROC and PR curves) in the run folder; returns its path."""
    commit, dirty = git_state()
    plot_curves(history.epochs, run_dir / CURVES)
    final = history.final
    plot_confusion(final.confusion, bundle.classes, run_dir / CONFUSION)
    curves = ""
    if final.probs is not None and final.roc_auc is not None:
        plot_roc_pr(final, bundle.classes, run_dir / ROC_PR)
        curves = "\n![ROC and precision-recall curves on test](roc_pr.png)\n"
    top5 = f", top-5 {100 * final.top5:.2f}%" if final.top5 is not None else ""
    rows = "\n".join(
        f"| {e['epoch']} | {fmt(e['train_loss'])} | {fmt(e['train_acc'], 100, 2)} | {fmt(e.get('val_loss'))} | "
        f"{fmt(e.get('val_acc'), 100, 2)} | {fmt(e.get('test_loss'))} | {fmt(e.get('test_acc'), 100, 2)} | "
        f"{e['lr']:.4f} | {e['seconds']:.0f} |"
        for e in history.epochs
    )
    selected = (
        f"the epoch with the best validation {cfg.monitor or 'accuracy'} ({len(bundle.val)} validation images)"
        if bundle.val is not None else "the last epoch: there is no validation split, so nothing was selected"
    )  # fmt: skip
    views = "the mean of each image and its mirror (flip TTA)" if cfg.tta else "single view"
    augmentation = " + ".join(cfg.augment().describe(in_memory=not is_streamed(cfg.data))) or "none"
    tested = ("The test split was evaluated once, at the end, and selected nothing." if bundle.val is not None
              else "With no validation split the table's test columns draw the curves; they selected nothing.")  # fmt: skip
    text = f"""# Training report: {cfg.model} on {bundle.name}

**Test accuracy {100 * final.top1:.2f}%**{top5} ({views}) on {final.count} test images, of the model from epoch
{history.best_epoch} of {len(history.epochs)}: {selected}. {tested} {history.seconds / 60:.1f} minutes of training (data loading and evaluation included).

- Data: {bundle.name}, {len(bundle.train)} training{f" / {len(bundle.val)} validation" if bundle.val is not None else ""} / {len(bundle.test)} test images, {bundle.num_classes} classes,
  {bundle.channels} channel(s), {bundle.image_size[0]}x{bundle.image_size[1]} px{f", {bundle.skipped} corrupt images skipped" if bundle.skipped else ""}
- Recipe: {cfg.optimizer.upper()} lr {cfg.lr if cfg.lr else "auto"} ({cfg.schedule}), batch {cfg.batch_size},
  weight decay {cfg.weight_decay}, label smoothing {cfg.label_smoothing}, augmentation: {augmentation},
  mixup {cfg.mixup}, class weights {cfg.class_weights or "none"},
  sampler {cfg.sampler}, seed {cfg.seed}; ran as {resolved(run_dir)}
- Machine: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}
- Source: commit `{commit}`{" (with uncommitted changes)" if dirty else ""}; command `{invocation()}`
- Full configuration: `config.json`; per-epoch numbers: `metrics.csv`; weights: `last.safetensors`{", `best.safetensors` (the model above)" if bundle.val is not None else " (the model above)"}

{metrics_section(history)}

![curves](curves.png)

| epoch | train loss | train acc % | val loss | val acc % | test loss | test acc % | lr | seconds |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

## Per-class results on test

```
{final.per_class_table(bundle.classes)}
```

![confusion matrix](confusion.png)
{curves}{mistakes_section(run_dir, bundle, history)}{dropped_section(bundle)}
Resume an interrupted run with `resnets train --resume {run_dir}`.
"""
    path = run_dir / REPORT
    atomic_write_text(path, text)
    return path
