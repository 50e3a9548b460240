"""Experiment `degradation`: the paper's Figure 6, plain-20/56 vs ResNet-20/56 with one recipe."""

from __future__ import annotations

from matplotlib.figure import Figure

from .options import ExperimentOptions
from .report import (
    INCONCLUSIVE,
    MARGIN_NOTE,
    NOT_LEARNED,
    ExperimentRun,
    Outcome,
    combine,
    compare,
    learned,
    markdown_table,
    noise_margin,
)
from .training import TrainBudget, final_row, train

CLAIM = (
    "Degradation (He et al. 2016, Figure 6): with the same recipe, the deeper plain net (56 layers) has a "
    "HIGHER training error than the shallower one (20 layers), while the deeper ResNet has a LOWER one."
)
MODELS = ("cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56")
BUDGETS = {
    "tiny": TrainBudget(epochs=1, limit=128, test_limit=100, batch_size=32, image_size=8),
    "quick": TrainBudget(epochs=4, limit=2500, test_limit=1000, batch_size=64, image_size=16),
    "full": TrainBudget(epochs=40, limit=None, test_limit=None, batch_size=128),
}


def run(options: ExperimentOptions) -> Outcome:
    """Train the four nets, plot training and test error per epoch, and judge the two comparisons."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("degradation", options)
    curves, finals = [], {}
    for name in MODELS:
        history = train(options, budget, exp.dir / "runs" / name, name)
        finals[name] = final_row(name, history)
        curves += [{"model": name, "epoch": e["epoch"], "train_error": 1 - e["train_acc"],
                    "test_error": 1 - e["test_acc"], "seconds": e["seconds"]} for e in history.epochs]  # fmt: skip
    exp.save_csv("curves.csv", curves)
    exp.save_json("final.json", finals)
    plot = exp.save_figure(plot_curves(curves), "figure6.png")
    verdict, reasons = judge(finals, budget.train_images)
    table = markdown_table(list(finals.values()), {"model": "net", "train_error": "final training error",
                           "test_error": "final test error", "seconds": "seconds"},
                           percent=("train_error", "test_error"))  # fmt: skip
    setup = [
        f"Nets: {', '.join(MODELS)} (ResNets with option A shortcuts), each trained from the same seed",
        f"Recipe (identical for all four): {budget.describe()}",
        "Training error is the mean over each epoch's augmented batches (as in the paper's curves)",
        "Each run's own folder (metrics, weights, report) is under `runs/`",
    ]
    results = f"{plot}\n\n{table}\n\nPer-epoch numbers: `curves.csv`."
    return exp.write_report(
        "Degradation: deeper plain nets train worse", CLAIM, setup, results, verdict, reasons
    )


def plot_curves(curves: list[dict]) -> Figure:
    """Figure 6 layout: plain nets left, ResNets right; dashed training error, solid test error."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, family in zip(axes, ("plain", "resnet"), strict=True):
        for name, color in ((f"cifar_{family}20", "tab:orange"), (f"cifar_{family}56", "tab:red")):
            rows = [r for r in curves if r["model"] == name]
            epochs = [r["epoch"] for r in rows]
            label = name.removeprefix("cifar_")
            ax.plot(epochs, [100 * r["train_error"] for r in rows], "--", color=color, label=f"{label} train")
            ax.plot(
                epochs, [100 * r["test_error"] for r in rows], "-", lw=2, color=color, label=f"{label} test"
            )
        ax.set(xlabel="epoch", ylabel="error (%)", title="plain" if family == "plain" else "ResNet")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def judge(finals: dict[str, dict], train_images: int) -> tuple[str, str]:
    """Both halves must hold by more than the noise of a training error measured on `train_images`."""
    parts, lines = [], []
    for family, sign, wanted in (("plain", 1, "higher"), ("resnet", -1, "lower")):
        shallow, deep = finals[f"cifar_{family}20"]["train_error"], finals[f"cifar_{family}56"]["train_error"]
        margin = noise_margin(shallow, train_images, deep, train_images)
        part = compare(sign * (deep - shallow), margin)
        parts.append(part)
        lines.append(
            f"{family}-56 training error {100 * deep:.1f}% vs {family}-20 {100 * shallow:.1f}% "
            f"(claim: {wanted}; noise margin ±{100 * margin:.1f} pts: {part})"
        )
    reasons = "; ".join(lines) + ". " + MARGIN_NOTE
    if not learned(1 - finals[f"cifar_{f}20"]["train_error"] for f in ("plain", "resnet")):
        return INCONCLUSIVE, NOT_LEARNED + reasons
    return combine(parts), reasons
