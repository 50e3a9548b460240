"""Studies of one recipe or one design choice: the paper's shortcut options A / B / C on CIFAR-10, and the d2l
chapter's ResNet-18 on Fashion-MNIST at its own settings."""

from __future__ import annotations

from typing import Any

from ...train import PRESETS
from ..training import SHORT_RUN
from .figure6 import RECIPE as CIFAR_RECIPE
from .runner import Arm, Report, Study, StudyResults
from .stats import INCONCLUSIVE, combine, pm, reaches, within

MARGIN = 0.01  # "under a point"


def report_shortcuts(results: StudyResults) -> Report:
    """Each pair of options differs by less than a point of test error (95% interval inside ±1 point)."""
    test = results.values
    error = lambda u: 1 - u["test"]["accuracy"]  # noqa: E731
    pairs = [("A", "B"), ("B", "C"), ("A", "C")]
    checks = [(f"{a} vs {b}", within(test(f"resnet20-{a}", error), test(f"resnet20-{b}", error), MARGIN))
              for a, b in pairs]  # fmt: skip
    reasons = "; ".join(f"{name}: **{part}** ({d.text()})" for name, (part, d) in checks)
    rows = [
        "| option | shortcut | seeds | test error (%) | final training error (%) |",
        "|---|---|---|---|---|",
    ]
    kinds = {
        "A": "identity, zero-padded channels",
        "B": "projection where the shape changes",
        "C": "projection everywhere",
    }
    for option, kind in kinds.items():
        label = f"resnet20-{option}"
        train = test(label, lambda u: 1 - u["epochs"][-1]["train_acc"])
        rows.append(
            f"| {option} | {kind} | {len(test(label, error))} | {pm(test(label, error))} | {pm(train)} |"
        )
    body = "\n".join(rows) + (
        "\n\nA claim of no difference needs an interval inside the margin, not a large p value: a verdict of "
        "'supports' means the 95% interval of the difference lies within ±1 point."
    )
    verdict = combine([c[1][0] for c in checks])
    if verdict == INCONCLUSIVE:
        reasons += ". Inconclusive: the intervals are wider than the margin (more seeds narrow them)"
    headline = "test error: " + "; ".join(f"{o} {pm(test(f'resnet20-{o}', error))}%" for o in "ABC")
    return Report(verdict, reasons, body, headline + " (the paper: gaps of 0.5 and 0.3 points, on ImageNet)")


SHORTCUTS = Study(
    "shortcuts",
    "Shortcut options A, B and C on CIFAR-10 at full scale: the differences are small",
    "He et al. 2016, section 3.3 and Table 3: projection shortcuts (B where dimensions change, C everywhere) "
    "are only marginally better than parameter-free zero-padding identity shortcuts (A); the differences are "
    "small (under a point), so projections are not essential for addressing the degradation problem.",
    CIFAR_RECIPE,
    tuple(Arm(f"resnet20-{o}", {"model": "cifar_resnet20", "shortcut": o}) for o in "ABC"),
    seeds=5,
    report=report_shortcuts,
)

D2L_TARGET = 0.906
# the `d2l` preset is the seed's recipe (section 8.6.4); torchvision's resnet18 layout differs from d2l's in two
# details only: no conv biases (each conv feeds a BatchNorm) and BatchNorm on the 1x1 projection
D2L_RECIPE: dict[str, Any] = SHORT_RUN | PRESETS["d2l"] | {
    "nesterov": False, "limit": None, "test_limit": None, "precision": "auto", "compile": None,
    "shortcut": None, "spec_overrides": None,
}  # fmt: skip


def report_d2l(results: StudyResults) -> Report:
    """Our seeds' test accuracy against the seed's single 0.906."""
    acc = results.values("resnet18", lambda u: u["test"]["accuracy"])
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
    (Arm("resnet18", {}),),
    seeds=3,
    report=report_d2l,
)
