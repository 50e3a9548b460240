"""Studies of one recipe or one design choice: the paper's shortcut options A / B / C on CIFAR-10, and the d2l
chapter's ResNet-18 on Fashion-MNIST at its own settings."""

from __future__ import annotations

import statistics
from typing import Any

from ...train import PRESETS
from ..stats import INCONCLUSIVE, combine, lower, pm, reaches, welch, within
from ..training import SHORT_RUN
from .figure6 import RECIPE as CIFAR_RECIPE
from .runner import Arm, Report, Study, StudyResults

MARGIN = 0.01  # "under a point"


DEPTHS = (
    20,
    56,
)  # the paper's CIFAR nets the options are compared on (the 56-layer arms: hours per unit on a CPU)
KINDS = {
    "A": "identity, zero-padded channels",
    "B": "projection where the shape changes",
    "C": "projection everywhere",
}


def report_shortcuts(results: StudyResults) -> Report:
    """Each pair of options differs by less than a point of test error (95% interval inside ±1 point), at
    each depth; a depth without units leaves the claim open."""
    test = results.values
    error = lambda u: 1 - u["test"]["accuracy"]  # noqa: E731
    checks = [(f"ResNet-{d} {a} vs {b}", within(test(f"resnet{d}-{a}", error), test(f"resnet{d}-{b}", error), MARGIN, (a, b)))
              for d in DEPTHS for a, b in (("A", "B"), ("B", "C"), ("A", "C"))]  # fmt: skip
    reasons = "; ".join(f"{name}: **{part}** ({d.text()})" for name, (part, d) in checks)
    rows = [
        "| net | option | shortcut | seeds | test error (%) | final training error (%) |",
        "|---|---|---|---|---|---|",
    ]
    for depth in DEPTHS:
        for option, kind in KINDS.items():
            label = f"resnet{depth}-{option}"
            train = test(label, lambda u: 1 - u["epochs"][-1]["train_acc"])
            rows.append(f"| ResNet-{depth} | {option} | {kind} | {len(test(label, error))} | "
                        f"{pm(test(label, error))} | {pm(train)} |")  # fmt: skip
    body = "\n".join(rows) + (
        "\n\nA claim of no difference needs an interval inside the margin, not a large p value: a verdict of "
        "'supports' means the 95% interval of the difference lies within ±1 point."
    )
    verdict = combine([c[1][0] for c in checks])
    if verdict == INCONCLUSIVE:
        reasons += ". Inconclusive: some intervals are wider than the margin, or a depth has no units yet"
    headline = "test error: " + "; ".join(
        f"ResNet-{d} " + ", ".join(f"{o} {pm(test(f'resnet{d}-{o}', error))}%" for o in KINDS) for d in DEPTHS
    )
    return Report(verdict, reasons, body, headline + " (the paper: gaps of 0.5 and 0.3 points, on ImageNet)")


SHORTCUTS = Study(
    "shortcuts",
    "Shortcut options A, B and C on CIFAR-10 at full scale: the differences are small",
    "He et al. 2016, section 3.3 and Table 3: projection shortcuts (B where dimensions change, C everywhere) "
    "are only marginally better than parameter-free zero-padding identity shortcuts (A); the differences are "
    "small (under a point), so projections are not essential for addressing the degradation problem.",
    CIFAR_RECIPE,
    tuple(
        Arm(f"resnet{d}-{o}", {"model": f"cifar_resnet{d}"} | ({} if o == "A" else {"shortcut": o}))
        for d in DEPTHS
        for o in KINDS
    ),  # fmt: skip (A is the CIFAR nets' own: the figure6 units, reused)
    seeds=5,
    report=report_shortcuts,
    first=tuple(f"resnet20-{o}" for o in KINDS),  # the 20-layer half (hours, not days) is decided first
)

D2L_TARGET = 0.906
# the `d2l` preset is the seed's recipe (section 8.6.4) with the seed's own network (`d2l_resnet18`, checked
# against d2l's layers and init in tests/test_models.py)
D2L_RECIPE: dict[str, Any] = SHORT_RUN | PRESETS["d2l"] | {
    "nesterov": False, "limit": None, "test_limit": None, "precision": "auto", "compile": None,
    "shortcut": None, "spec_overrides": None,
}  # fmt: skip


def report_d2l(results: StudyResults) -> Report:
    """Our seeds' test accuracy against the seed's single 0.906."""
    acc = results.values("d2l_resnet18", lambda u: u["test"]["accuracy"])
    verdict, interval = reaches(acc, D2L_TARGET, 0.005)
    reasons = f"test accuracy {interval} against d2l's {D2L_TARGET} (one run) with a margin of half a point"
    body = (
        f"| | seeds | test accuracy (%) |\n|---|---|---|\n| d2l 8.6.4 (the seed) | 1 | {100 * D2L_TARGET:.1f} |\n"
        f"| ours | {len(acc)} | {pm(acc)} |\n\nPer-epoch numbers: `units/*.json`."
    )
    return Report(verdict, reasons, body, f"test accuracy {pm(acc)}% (d2l: {100 * D2L_TARGET:.1f}%)")


D2L = Study(
    "d2l",
    "d2l 8.6: ResNet-18 on Fashion-MNIST at 96 px reaches 0.906",
    "Dive into Deep Learning, section 8.6.4: ResNet-18 trained for 10 epochs on Fashion-MNIST resized to 96 px "
    "(batch 128, plain SGD at lr 0.01) reaches a validation (test-set) accuracy of 0.906.",
    D2L_RECIPE,
    (Arm("d2l_resnet18", {}),),
    seeds=3,
    report=report_d2l,
)


FASTBOOK_TARGET = 0.849
# fastbook's Imagenette chapter (the seed): its own ResNet-34 (`fastbook_resnet34`, checked against the seed's
# layers in tests/test_models.py: unpadded stem without ReLU, conv biases) from scratch,
# Learner(...).fine_tune(freeze_epochs=3, epochs=12, base_lr=5e-4), 224 px, batch 32, evaluated on the 3,925
# validation images (our test split: Imagenette's val/). fastai's defaults: Adam (AdamW-style weight decay
# 0.01), one-cycle. A model built without a splitter has one parameter group, so fine_tune's "frozen" epochs
# freeze nothing there; ours does the same without --weights (TrainConfig.frozen_epochs): all layers train
# 3 epochs on fastai's cosine one-cycle (from 5e-4/25 up to 5e-4 after 99% of them, `--schedule fastai`), then
# 12 at half the LR (from 2.5e-4/5, peak after 30%: warm-up 3.6 epochs, down to 2.5e-9), the optimizer's state
# cleared between, Adam's beta1 cycled 0.95-0.85-0.95 against the LR, its beta2 0.99 and eps 1e-5, as fastai's
# Adam. aug_transforms(min_scale=0.5) as fastai draws it: square random-resized crops of 50-100% of the area
# (--crop-scale 0.5 --crop-ratio 1), flips, and to 3 images in 4 each: rotations up to 10 degrees, zoom up to
# 1.1x, perspective warps of 0.2 along x and along y, brightness and contrast changes of 0.2 (in logit space).
# Still different from fastai: those distortions resample the crop, not the Resize(460) presized image before
# it (the public copy is 224 px already), so a rotated crop's corners reflect the crop's border rather than show
# the image around it. Evaluation as fastai's: the whole image (--eval-resize 1), not a centre crop.
FASTBOOK_RECIPE: dict[str, Any] = SHORT_RUN | {
    "data": "imagenette", "model": "fastbook_resnet34", "image_size": 224, "freeze_epochs": 3, "epochs": 12,
    "batch_size": 32, "optimizer": "adamw", "lr": 5e-4, "weight_decay": 0.01, "adam_beta2": 0.99, "adam_eps": 1e-5,
    "schedule": "fastai",
    "warmup_epochs": 3.6, "label_smoothing": 0.0, "crop_padding": 0, "crop_scale": 0.5, "crop_ratio": 1.0, "eval_resize": 1.0, "flip": True,
    "rotate": 10.0, "zoom": 1.1, "warp": 0.2, "lighting": 0.2,
    "tta": False, "limit": None, "test_limit": None, "precision": "auto", "compile": None, "shortcut": None,
    "spec_overrides": None, "nesterov": False,
}  # fmt: skip


def report_fastbook(results: StudyResults) -> Report:
    """Our seeds' accuracy on Imagenette's validation images against fastbook's 84.9% after 15 epochs."""
    acc = results.values("fastbook_resnet34", lambda u: u["test"]["accuracy"])
    verdict, interval = reaches(acc, FASTBOOK_TARGET, 0.01)
    reasons = (
        f"accuracy {interval} against fastbook's {100 * FASTBOOK_TARGET:.1f}% (one run), margin one point"
    )
    body = (
        f"| | seeds | accuracy on the 3,925 validation images (%) |\n|---|---|---|\n"
        f"| fastbook (the seed) | 1 | {100 * FASTBOOK_TARGET:.1f} |\n| ours | {len(acc)} | {pm(acc)} |\n\n"
        "Imagenette from the public copy thunderInfy/imagenette on GitHub (9,469 train / 3,925 val images, "
        "224x224 JPEG); point --data-root at the folder holding its train/ and val/.\n\n"
        "As fastai trains it: the seed's ResNet-34 layer for layer, fine_tune's two one-cycles (3 + 12 epochs, "
        "nothing frozen without pretrained weights), fastai's Adam (beta2 0.99, eps 1e-5, weight decay 0.01), "
        "batch 32, aug_transforms(min_scale=0.5) as fastai draws them (square crops of 50-100% of the area, "
        "flips, rotations, zoom, warps, lighting). Not as fastai: the distortions resample the 224 px crop, not "
        "the 460 px presized image (the copy is 224 px, so a rotated crop's corners are reflected rather than "
        "taken from around it); the units train in bf16 autocast where the machine has it (the seed: fp32). "
        "Evaluated as fastai evaluates: the whole image (--eval-resize 1), not torchvision's centre crop."
    )
    return Report(verdict, reasons, body, f"accuracy {pm(acc)}% (fastbook: {100 * FASTBOOK_TARGET:.1f}%)")


FASTBOOK = Study(
    "fastbook",
    "fastbook: a ResNet-34 from scratch reaches 84.9% on Imagenette in 15 epochs",
    "fastbook's Imagenette chapter (the seed): a ResNet-34 trained from scratch with fine_tune(freeze_epochs=3, "
    "epochs=12, base_lr=5e-4) at 224 px reaches 84.9% accuracy on Imagenette's validation images.",
    FASTBOOK_RECIPE,
    (Arm("fastbook_resnet34", {}),),
    seeds=3,
    report=report_fastbook,
)

# The chest X-ray seed builds ResNet-18 at 224 px (its input) with dropout before the classifier and gives no
# training recipe; ours: AdamW at lr 1e-3 (one-cycle), 10 epochs, batch 32, flips and Inception-style crops,
# 10% of train carved (per class, seeded) as validation that picks the epoch by ROC-AUC; test reports.
XRAY_RECIPE: dict[str, Any] = SHORT_RUN | {
    "data": "folder:", "model": "resnet18", "image_size": 224, "epochs": 10, "batch_size": 32,
    "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "label_smoothing": 0.0, "crop_padding": 0,
    "flip": True, "tta": False, "val_split": 0.1, "monitor": "roc_auc", "positive": "PNEUMONIA", "limit": None,
    "test_limit": None, "precision": "auto", "compile": None, "shortcut": None, "spec_overrides": None,
    "nesterov": False,
}  # fmt: skip


def report_xray(results: StudyResults) -> Report:
    """Dropout on vs off: test error and ROC-AUC, Welch's t-test on the error."""
    v = results.values
    error = lambda u: 1 - u["test"]["accuracy"]  # noqa: E731
    auc = lambda u: u["test"]["roc_auc"]  # noqa: E731
    verdict, d = lower(v("dropout-0.2", error), v("no-dropout", error), ("dropout", "no dropout"))
    reasons = f"test error with dropout lower than without: **{verdict}** ({d.text()})"
    rows = [
        "| arm | seeds | test error (%) | test ROC-AUC | balanced accuracy (%) |",
        "|---|---|---|---|---|",
    ]
    for arm in ("dropout-0.2", "no-dropout"):
        bal = v(arm, lambda u: u["test"]["balanced_accuracy"])
        rows.append(f"| {arm} | {len(bal)} | {pm(v(arm, error))} | {pm(v(arm, auc), 1, 4)} | {pm(bal)} |")
    sides = ("dropout", "no dropout")
    ranking = welch(v("dropout-0.2", auc), v("no-dropout", auc), sides).text(100, "")
    balanced = welch(v("dropout-0.2", lambda u: u["test"]["balanced_accuracy"]),
                     v("no-dropout", lambda u: u["test"]["balanced_accuracy"]), sides).text()  # fmt: skip
    spread = " and ".join(
        f"{100 * statistics.stdev(v(a, error)):.2f} points with {a}" for a in ("dropout-0.2", "no-dropout")
        if len(v(a, error)) > 1
    )  # fmt: skip
    body = "\n".join(rows) + (
        "\n\nThe test split is imbalanced (234 normal, 390 pneumonia): balanced accuracy and ROC-AUC say more "
        "than accuracy. The validation split picks each unit's epoch by ROC-AUC; test only reports.\n\n"
        "**Beside the verdict** (the same test on two more measures; they do not change the verdict, which is "
        f"about the error the seed's claim is about): ROC-AUC x 100, which ranks the images whatever the threshold, "
        f"{ranking}; balanced accuracy, {balanced}. The seed-to-seed standard deviation of the test error is "
        f"{spread or 'not known yet (one seed per arm)'}: the spreads set how small a difference this many seeds "
        "can find."
    )
    headline = "; ".join(f"{a} error {pm(v(a, error))}%" for a in ("dropout-0.2", "no-dropout"))
    return Report(verdict, reasons, body, headline)


XRAY = Study(
    "chest-xray",
    "Chest X-ray: the seed's ResNet-18 with dropout, on vs off",
    "The chest X-ray seed adds dropout before the classifier of its ResNet-18 (224 px, from scratch) to "
    "classify pneumonia: the claim tested is that dropout gives a lower test error than the same net without.",
    XRAY_RECIPE,
    (Arm("dropout-0.2", {"drop_rate": 0.2}), Arm("no-dropout", {"drop_rate": 0.0})),
    seeds=3,
    report=report_xray,
)
