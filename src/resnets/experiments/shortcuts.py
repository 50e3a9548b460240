"""Experiment `shortcuts`: the paper's options A (zero-pad), B (projection where the shape changes) and
C (projection everywhere) on the same CIFAR ResNet-20."""

from __future__ import annotations

from matplotlib.figure import Figure

from ..models import count_params
from .options import ExperimentOptions
from .report import (
    INCONCLUSIVE,
    MARGIN_NOTE,
    NOT_LEARNED,
    REFUTES,
    SUPPORTS,
    ExperimentRun,
    Outcome,
    learned,
    markdown_table,
    noise_margin,
)
from .training import TrainBudget, final_row, train

CLAIM = (
    "Projection shortcuts are not essential (paper Table 3): the parameter-free option A trains about as "
    "well as B and C, which add parameters; all three land within 1 point of test accuracy."
)
MODEL = "cifar_resnet20"
OPTIONS = ("A", "B", "C")
CLOSE = 0.01  # "about as well": within one point of accuracy
BUDGETS = {
    "tiny": TrainBudget(epochs=1, limit=128, test_limit=100, batch_size=32, image_size=8),
    "quick": TrainBudget(epochs=4, limit=5000, test_limit=1000, batch_size=64, image_size=16),
    "full": TrainBudget(epochs=40, limit=None, test_limit=None, batch_size=128),
}


def run(options: ExperimentOptions) -> Outcome:
    """Train the net once per shortcut option and compare parameters and accuracy."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("shortcuts", options)
    rows, curves = [], []
    for option in OPTIONS:
        history = train(options, budget, exp.dir / "runs" / f"option{option}", MODEL, shortcut=option)
        rows.append(final_row(f"option {option}", history) | {"params": count_params(history.model)})
        curves += [
            {"option": option, "epoch": e["epoch"], "test_error": 1 - e["test_acc"]} for e in history.epochs
        ]
    exp.save_csv("results.csv", rows)
    exp.save_csv("curves.csv", curves)
    exp.save_json("results.json", rows)
    plot = exp.save_figure(plot_results(rows, curves), "shortcuts.png")
    verdict, reasons = judge(rows)
    table = markdown_table(rows, {"model": "shortcut", "params": "parameters", "test_acc": "test accuracy",
                                  "train_error": "final training error", "seconds": "seconds"},
                           percent=("test_acc", "train_error"))  # fmt: skip
    setup = [
        f"Net: {MODEL} (paper section 4.2), rebuilt with shortcut option A, B or C; same seed for all",
        f"Recipe (identical for all three): {budget.describe()}",
    ]
    results = f"{plot}\n\n{table}"
    return exp.write_report("Shortcut options A, B and C", CLAIM, setup, results, verdict, reasons)


def plot_results(rows: list[dict], curves: list[dict]) -> Figure:
    """Test error per epoch for each option, and each option's parameter count."""
    fig = Figure(figsize=(10, 4))
    ax_curve, ax_params = fig.subplots(1, 2)
    for option in OPTIONS:
        points = [c for c in curves if c["option"] == option]
        ax_curve.plot([c["epoch"] for c in points], [100 * c["test_error"] for c in points], "o-",
                      label=f"option {option}")  # fmt: skip
    ax_curve.set(xlabel="epoch", ylabel="test error (%)", title="Test error")
    ax_curve.legend()
    ax_curve.grid(alpha=0.3)
    ax_params.bar([r["model"] for r in rows], [r["params"] / 1e6 for r in rows], color="tab:gray")
    ax_params.set(ylabel="parameters (M)", title="Parameters")
    return fig


def judge(rows: list[dict]) -> tuple[str, str]:
    """Supported if the accuracy spread is within one point and the test set can resolve one point."""
    accs = [r["test_acc"] for r in rows]
    best, worst = max(accs), min(accs)
    n = rows[0]["test_images"]
    spread, margin = best - worst, noise_margin(best, n, worst, n)
    if not learned(accs):
        verdict = INCONCLUSIVE
    elif spread > max(margin, CLOSE):
        verdict = REFUTES
    elif spread <= CLOSE and margin <= 2 * CLOSE:
        verdict = SUPPORTS
    else:
        verdict = INCONCLUSIVE
    accuracies = ", ".join(f"{r['model']} {100 * r['test_acc']:.1f}% ({r['params']:,} params)" for r in rows)
    prefix = "" if learned(accs) else NOT_LEARNED
    return verdict, prefix + (
        f"{accuracies}: spread {100 * spread:.1f} pts against a noise margin of ±{100 * margin:.1f} pts "
        f"on {n} test images (claim: within {100 * CLOSE:.0f} pt). {MARGIN_NOTE}"
    )
