"""Experiment `degradation`: the paper's Figure 6, plain-20/56 vs ResNet-20/56 with one recipe, over seeds."""

from __future__ import annotations

from matplotlib.figure import Figure

from .options import ExperimentOptions
from .report import (
    NOT_LEARNED,
    RULE,
    ExperimentRun,
    Outcome,
    by_label,
    learned,
    markdown_table,
    ordered,
    pm,
    seed_summary,
)
from .stats import INCONCLUSIVE, combine, mean_std
from .training import SHORT_RUN, TrainBudget, describe, final_row, train

CLAIM = (
    "Degradation (He et al. 2016, Figure 6, CIFAR-10): with the same recipe, the deeper plain net (56 layers) "
    "has a HIGHER training error than the shallower one (20 layers), while the deeper ResNet has a LOWER one."
)
MODELS = ("cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56")
RECIPE = dict(SHORT_RUN)
# cpu: estimated, not run in full: one epoch timed on our shared 2-core EPYC (one thread, load average ~5) with
# 4,000 CIFAR-10 images at 16 px plus 1,000 test images took 18 s for ResNet-20 and 36 s for plain-56, so
# 3 seeds x 6 epochs x (18 + 18 + 36 + 33 s) ~ 32 minutes there (less on an idle machine)
BUDGETS = {
    "tiny": TrainBudget(epochs=1, limit=128, test_limit=100, batch_size=32, lr=0.025, image_size=8),
    "quick": TrainBudget(epochs=4, limit=2500, test_limit=1000, batch_size=64, lr=0.05, image_size=16),
    "cpu": TrainBudget(epochs=6, limit=4000, test_limit=1000, batch_size=64, lr=0.05, image_size=16),
    "full": TrainBudget(epochs=40, limit=None, test_limit=None, batch_size=128, lr=0.1),
}


def run(options: ExperimentOptions) -> Outcome:
    """Train the four nets once per seed, plot training and test error per epoch, and judge both halves."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("degradation", options)
    curves, finals = [], []
    for seed in options.seed_list:
        for name in MODELS:
            history = train(options, budget, RECIPE, exp.dir / "runs" / f"{name}-seed{seed}", name, seed)
            finals.append(final_row(name, history, seed))
            curves += [{"model": name, "seed": seed, "epoch": e["epoch"], "train_error": 1 - e["train_acc"],
                        "test_error": 1 - e["test_acc"], "seconds": e["seconds"]} for e in history.epochs]  # fmt: skip
    exp.save_csv("curves.csv", curves)
    exp.save_json("final.json", finals)
    plot = exp.save_figure(plot_curves(curves), "figure6.png")
    verdict, reasons = judge(finals)
    columns = {"model": "net", "train_error": "final training error", "test_error": "final test error"}
    summary = markdown_table(seed_summary(finals, "model", ("train_error", "test_error", "seconds")),
                             columns | {"seconds": "seconds", "seeds": "seeds"})  # fmt: skip
    per_seed = markdown_table(
        finals, {"model": "net", "seed": "seed"} | columns, percent=("train_error", "test_error")
    )
    setup = [
        f"Nets: {', '.join(MODELS)} (ResNets with option A shortcuts); seeds {options.seed_list}, each net "
        "trained once per seed",
        f"Recipe (identical for all four): {describe(history.config)}",
        "Training error is the mean over each epoch's augmented batches (as in the paper's curves); "
        "curves are means over seeds",
        "Each run's own folder (metrics, weights, report) is under `runs/`",
    ]
    results = f"{plot}\n\n{summary}\n\nPer seed:\n\n{per_seed}\n\nPer-epoch numbers: `curves.csv`."
    return exp.write_report(
        "Degradation: deeper plain nets train worse", CLAIM, setup, results, verdict, reasons
    )


def plot_curves(curves: list[dict]) -> Figure:
    """Figure 6 layout: plain nets left, ResNets right; dashed training error, solid test error (seed means)."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, family in zip(axes, ("plain", "resnet"), strict=True):
        for name, color in ((f"cifar_{family}20", "tab:orange"), (f"cifar_{family}56", "tab:red")):
            rows = [r for r in curves if r["model"] == name]
            epochs = sorted({r["epoch"] for r in rows})
            label = name.removeprefix("cifar_")
            for key, style, width in (("train_error", "--", 1), ("test_error", "-", 2)):
                means = [100 * mean_std([r[key] for r in rows if r["epoch"] == e])[0] for e in epochs]
                ax.plot(epochs, means, style, lw=width, color=color, label=f"{label} {key.split('_')[0]}")
        ax.set(xlabel="epoch", ylabel="error (%)", title="plain" if family == "plain" else "ResNet")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def judge(finals: list[dict]) -> tuple[str, str]:
    """Both halves must hold by RULE over the seeds' final training errors."""
    errors = by_label(finals, "model", "train_error")
    parts, lines = [], []
    for family, wanted in (("plain", "higher"), ("resnet", "lower")):
        shallow, deep = errors[f"cifar_{family}20"], errors[f"cifar_{family}56"]
        part = ordered(shallow, deep) if family == "plain" else ordered(deep, shallow)
        parts.append(part)
        lines.append(f"{family}-56 training error {pm(deep, True)} vs {family}-20 {pm(shallow, True)} "
                     f"(claim: {wanted}: {part})")  # fmt: skip
    reasons = "; ".join(lines) + ". " + RULE
    if not learned(1 - mean_std(errors[f"cifar_{f}20"])[0] for f in ("plain", "resnet")):
        return INCONCLUSIVE, NOT_LEARNED + reasons
    return combine(parts), reasons
