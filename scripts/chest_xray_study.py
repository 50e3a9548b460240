"""The chest X-ray tutorials' claims, measured: a ResNet-18 from scratch with and without class weighting, and
fine-tune vs freeze from pretrained weights, each with several seeds, validation carved from train.

No ImageNet weights are reachable on our machines, so the "pretrained" weights are a ResNet-18 trained here on
CIFAR-10, which stands in for ImageNet; the report says so. Every run's numbers are appended to results.json
as soon as it finishes (a stopped study resumes where it was) and report.md is regenerated from them.

    python scripts/chest_xray_study.py --data-root PATH/chest_xray --cifar-root PATH/cifar10 --out docs/chest_xray
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from resnets.files import atomic_write_text
from resnets.machine import load_average
from resnets.provenance import invocation, provenance
from resnets.train import TrainConfig, fit

METRICS = {"accuracy": "accuracy %", "balanced_accuracy": "balanced acc. %", "sensitivity": "sensitivity %",
           "specificity": "specificity %", "roc_auc": "ROC-AUC", "minutes": "minutes"}  # fmt: skip
PERCENT = ("accuracy", "balanced_accuracy", "sensitivity", "specificity")


def common(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The protocol shared by every chest X-ray run: validation carved from train selects by ROC-AUC."""
    return dict(model="resnet18", data=f"folder:{args.data_root}", image_size=args.image_size, val_split=0.1,
                monitor="roc_auc", positive="PNEUMONIA", batch_size=64, workers=0, seed=seed, quiet=True,
                drop_rate=0.2, channels_last=False, precision="fp32")  # fmt: skip


def plans(args: argparse.Namespace, pretrained: Path) -> dict[str, dict[str, Any]]:
    """Each variant's own settings on top of `common`: part (a), scratch with and without class weights;
    part (b), scratch vs head-only vs full fine-tune vs freeze-then-unfreeze from the stand-in weights."""
    e, w = args.epochs, str(pretrained)
    return {
        "a/scratch": {"epochs": e},
        "a/scratch+class-weights": {"epochs": e, "class_weights": "balanced"},
        "b/scratch": {"epochs": args.transfer_epochs},
        "b/head only (frozen body)": {"epochs": args.transfer_epochs, "weights": w, "freeze": True},
        "b/fine-tune all layers": {"epochs": args.transfer_epochs, "weights": w},
        "b/freeze 1 epoch, then all": {"epochs": args.transfer_epochs - 1, "freeze_epochs": 1, "weights": w},
    }


def pretrain(args: argparse.Namespace) -> Path:
    """ResNet-18 on CIFAR-10 (the ImageNet stand-in), once; its last weights start part (b)."""
    out = Path(args.work) / "pretrain-cifar10"
    if not (out / "last.safetensors").is_file() or not (out / "report.md").is_file():
        cfg = TrainConfig(model="resnet18", data="cifar10", data_root=str(args.cifar_root), epochs=args.pretrain_epochs,
                          batch_size=128, workers=0, seed=0, quiet=True, out=str(out), channels_last=False,
                          precision="fp32")  # fmt: skip
        fit(cfg, overwrite=True)
    return out / "last.safetensors"


def run_one(args: argparse.Namespace, name: str, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """Train one variant with one seed and return its test numbers (the final model, evaluated once)."""
    out = Path(args.work) / name.replace("/", "-").replace(" ", "_") / f"seed{seed}"
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the re-initialised classifier and the small-validation notes
        history = fit(TrainConfig(**(common(args, seed) | settings | {"out": str(out)})), overwrite=True)
    test, operating = history.final, history.operating["threshold"]
    return {"variant": name, "seed": seed, "accuracy": test.top1, "balanced_accuracy": test.balanced_accuracy,
            "sensitivity": operating.sensitivity, "specificity": operating.specificity, "roc_auc": test.roc_auc,
            "best_epoch": history.best_epoch, "minutes": (time.perf_counter() - start) / 60}  # fmt: skip


def summary_table(results: list[dict[str, Any]], variants: list[str]) -> str:
    """Mean ± std over seeds per variant (n = seeds finished)."""
    lines = ["| variant | n | " + " | ".join(METRICS.values()) + " |", "|---|---:|" + "---:|" * len(METRICS)]
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        if not rows:
            lines.append(f"| {variant} | 0 |" + " not run |" * len(METRICS))
            continue
        cells = []
        for key in METRICS:
            scale = 100 if key in PERCENT else 1
            values = [scale * r[key] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}" if key != "roc_auc"
                         else f"{statistics.mean(values):.3f} ± {spread:.3f}")  # fmt: skip
        lines.append(f"| {variant} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sections(args: argparse.Namespace, results: list[dict[str, Any]], variants: list[str]) -> str:
    """The summary of each part this study ran."""
    titles = {"a": f"(a) From scratch, {args.epochs} epochs, with and without class weighting (`--class-weights balanced`)",
              "b": f"(b) Fine-tune vs freeze, {args.transfer_epochs} epochs in all"}  # fmt: skip
    return "\n\n".join(
        f"## {titles[part]}\n\n{summary_table(results, [v for v in variants if v.startswith(part + '/')])}\n"
        for part in args.parts
    )


def stand_in(args: argparse.Namespace) -> str:
    """Part (b)'s caveat: the pretrained weights are not ImageNet's."""
    if "b" not in args.parts:
        return ""
    return (f"**Pretrained weights are a stand-in:** no ImageNet weights can be downloaded here, so part (b) starts "
            f"from a ResNet-18 trained on CIFAR-10 for {args.pretrain_epochs} epochs at 32 px on this machine. "
            "Conclusions about ImageNet fine-tuning do not transfer one to one.")  # fmt: skip


def report(args: argparse.Namespace, results: list[dict[str, Any]], variants: list[str], record: dict) -> str:
    m = record["machine"]
    by_seed = "\n".join(
        f"| {r['variant']} | {r['seed']} | {100 * r['accuracy']:.2f} | {100 * r['balanced_accuracy']:.2f} | "
        f"{100 * r['sensitivity']:.1f} | {100 * r['specificity']:.1f} | {r['roc_auc']:.3f} | {r['best_epoch']} | "
        f"{r['minutes']:.1f} |"
        for r in results
    )
    return f"""# Chest X-ray pneumonia: from scratch, class weighting, fine-tune vs freeze

Generated by `scripts/chest_xray_study.py` from `results.json`; do not edit by hand.

**Protocol.** Kermany et al.'s chest X-ray set (train {args.data_root}/train, test {args.data_root}/test).
A stratified 10% of train (seeded) is the validation split: it picks the checkpoint (best validation ROC-AUC),
and nothing else does; the official test split (624 images: 234 normal, 390 pneumonia) is evaluated once per
run, on the selected model. ResNet-18 with dropout 0.2 before the classifier, {args.image_size} px
(resized from 224 px to fit this CPU), batch 64, SGD one-cycle, label smoothing 0.1, fp32.
Sensitivity and specificity are for PNEUMONIA at probability threshold 0.5.
{stand_in(args)}

{sections(args, results, variants)}
Mean ± standard deviation over seeds; "n" is how many seeds finished. A difference between two variants is
only read as one when it exceeds the larger of their standard deviations.

## Every run

| variant | seed | accuracy % | balanced % | sensitivity % | specificity % | ROC-AUC | best epoch | minutes |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{by_seed}

## Provenance

- Commit: `{record["commit"]}` (tree dirty: {record["dirty"]}); each run in results.json records its own
- Command: `{record["command"]}`
- Machine: {m["cpu"]} ({m["cores"]} cores, torch threads {m["threads"]}); load average while running:
  {", ".join(f"{v:.1f}" for v in load_average())} (1/5/15 min; wall times are from a shared machine)
- Versions: {", ".join(f"{k} {v}" for k, v in record["versions"].items())}
- Seeds: {", ".join(map(str, args.seeds))}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, required=True, help="the chest_xray folder (train/, test/)")
    parser.add_argument(
        "--cifar-root", type=Path, required=True, help="CIFAR-10 (train/<class>/*.png, test/)"
    )
    parser.add_argument("--out", type=Path, required=True, help="where results.json and report.md go")
    parser.add_argument("--work", default="/tmp/chest_xray_study", help="run folders (weights, logs)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8, help="part (a)")
    parser.add_argument("--transfer-epochs", type=int, default=5, help="part (b), freeze epochs included")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else []
    pretrained = pretrain(args) if "b" in args.parts else Path("unused")
    variants = [v for v in plans(args, pretrained) if v.split("/")[0] in args.parts]
    for seed in args.seeds:  # seed-major: an interrupted study still has every variant at the first seeds
        for name in variants:
            if any(r["variant"] == name and r["seed"] == seed for r in results):
                continue
            record = provenance(invocation(), torch.device("cpu"))
            results.append(
                run_one(args, name, plans(args, pretrained)[name], seed) | {"commit": record["commit"]}
            )
            atomic_write_text(results_file, json.dumps(results, indent=1))
            atomic_write_text(args.out / "report.md", report(args, results, variants, record))
            print(f"{name} seed {seed}: test accuracy {100 * results[-1]['accuracy']:.2f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
