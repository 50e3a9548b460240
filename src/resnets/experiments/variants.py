"""Experiment `variants` (the d2l exercises): ResNet v1, v1.5, v1d, pre-activation and ResNeXt at several
cardinalities, as small CIFAR-stem bottleneck nets of (nearly) equal MACs, trained with one recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure

from ..models import ResNet, count_macs, count_params, get_entry
from .options import ExperimentOptions
from .report import (
    INCONCLUSIVE,
    MARGIN_NOTE,
    NOT_LEARNED,
    REFUTES,
    SUPPORTS,
    ExperimentRun,
    Outcome,
    compare,
    learned,
    markdown_table,
    noise_margin,
)
from .training import TrainBudget, final_row, train

CLAIM = (
    "The refinements of the original ResNet (v1.5's stride in the 3x3, v1d's average-pool shortcut, "
    "v2's pre-activation, ResNeXt's grouped convolutions) are at least as accurate as v1 at the same compute, "
    "and at least one of them is clearly better."
)
# label -> zoo model whose spec is shrunk; the ResNeXt rows change groups/base_width of v1.5
VARIANTS = {"v1": "resnet50_v1", "v1.5": "resnet50", "v1d": "resnet50d", "pre-act (v2)": "preact_resnet50"}


@dataclass(frozen=True)
class VariantBudget:
    train: TrainBudget
    layers: tuple[int, ...]  # bottleneck blocks per stage of the small nets
    widths: tuple[int, ...]
    cardinalities: tuple[int, ...]  # ResNeXt groups; groups=1 is v1.5 itself


BUDGETS = {
    "tiny": VariantBudget(TrainBudget(epochs=1, limit=64, test_limit=64, batch_size=32, image_size=8), (1, 1, 1), (8, 16, 32), (2,)),
    "quick": VariantBudget(TrainBudget(epochs=3, limit=3000, test_limit=1000, batch_size=64, image_size=16),
                           (1, 1, 1), (16, 32, 64), (2, 4, 8)),
    "full": VariantBudget(TrainBudget(epochs=30, limit=None, test_limit=None, batch_size=128), (3, 3, 3), (16, 32, 64), (2, 4, 8)),
}  # fmt: skip


def macs_of(model: str, overrides: dict[str, Any], channels: int, side: int) -> int:
    """MACs of a zoo model's spec with `overrides`, counted on the meta device."""
    with torch.device("meta"):
        net = ResNet(get_entry(model).spec.with_(**overrides), num_classes=10, in_channels=channels)
        return count_macs(net, (channels, side, side))


def matched_base_width(groups: int, base: dict[str, Any], target: int, channels: int, side: int) -> int:
    """The ResNeXt base width whose MACs at `groups` come closest to `target`, by bisection (MACs grow with it)."""

    def macs(width: int) -> int:
        return macs_of("resnet50", base | {"groups": groups, "base_width": width}, channels, side)

    low, high = 1, 256  # smallest width reaching the target lies in (low, high]
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if macs(mid) < target else (low, mid)
    return min((low, high), key=lambda w: abs(macs(w) - target))


def variant_specs(budget: VariantBudget, channels: int, side: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """label -> (zoo model, spec overrides) for every variant, ResNeXt widths matched to v1.5's MACs."""
    base = {"stem": "cifar", "layers": budget.layers, "widths": budget.widths}
    specs = {label: (model, dict(base)) for label, model in VARIANTS.items()}
    target = macs_of("resnet50", base, channels, side)
    for g in budget.cardinalities:
        width = matched_base_width(g, base, target, channels, side)
        specs[f"ResNeXt {g}x{width}"] = ("resnet50", base | {"groups": g, "base_width": width})
    return specs


def run(options: ExperimentOptions) -> Outcome:
    """Build each variant small, train it with the shared recipe, and compare accuracy, MACs and time."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("variants", options)
    channels = 1 if options.data == "fashion-mnist" else 3
    side = budget.train.image_size or (28 if options.data == "fashion-mnist" else 32)
    rows = []
    for i, (label, (model, overrides)) in enumerate(variant_specs(budget, channels, side).items()):
        history = train(
            options, budget.train, exp.dir / "runs" / f"{i}-{model}", model, spec_overrides=overrides
        )
        changes = f"{overrides['groups']} x {overrides['base_width']}" if "groups" in overrides else ""
        rows.append(final_row(label, history) | {
            "zoo_model": model, "changes": changes, "params": count_params(history.model),
            "mmacs": count_macs(history.model.cpu(), (channels, side, side)) / 1e6,
        })  # fmt: skip
    exp.save_csv("results.csv", rows)
    exp.save_json("results.json", {"base_overrides": {"stem": "cifar", "layers": budget.layers,
                                   "widths": budget.widths}, "rows": rows})  # fmt: skip
    plot = exp.save_figure(plot_results(rows), "variants.png")
    verdict, reasons = judge(rows)
    table = markdown_table(rows, {"model": "variant", "zoo_model": "from", "changes": "groups / base width",
                                  "params": "params", "mmacs": "MMACs", "test_acc": "test accuracy",
                                  "train_error": "final training error", "seconds": "seconds"},
                           percent=("test_acc", "train_error"))  # fmt: skip
    depth = 3 * sum(budget.layers) + 2
    setup = [
        f"Each variant is its zoo model's spec shrunk with `TrainConfig.spec_overrides`: CIFAR stem (3x3, 16), "
        f"bottleneck blocks {budget.layers} per stage (depth {depth}), widths {budget.widths}; nothing is "
        "registered. v1d keeps its average-pool shortcut but, with the CIFAR stem, not its deep stem",
        f"ResNeXt: v1.5 with groups {budget.cardinalities} and the base width that brings its MACs closest to v1.5's "
        "(groups=1, base width 64), found by counting",
        f"Recipe (identical for all): {budget.train.describe()}",
    ]
    results = f"{plot}\n\n{table}"
    return exp.write_report("Variants at matched compute", CLAIM, setup, results, verdict, reasons)


def plot_results(rows: list[dict]) -> Figure:
    """Test accuracy vs MACs (labelled), and training time per variant."""
    fig = Figure(figsize=(11, 4.5))
    ax_acc, ax_time = fig.subplots(1, 2)
    for r in rows:
        ax_acc.scatter(r["mmacs"], 100 * r["test_acc"], s=20)
        ax_acc.annotate(r["model"], (r["mmacs"], 100 * r["test_acc"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
    ax_acc.set(xlabel="MMACs per image", ylabel="test accuracy (%)", title="Accuracy vs compute")
    ax_acc.grid(alpha=0.3)
    ax_time.barh([r["model"] for r in rows], [r["seconds"] for r in rows], color="tab:gray")
    ax_time.set(xlabel="training seconds", title="Time (same recipe)")
    return fig


def judge(rows: list[dict]) -> tuple[str, str]:
    """Each variant's accuracy minus v1's, against the noise of the test set."""
    v1 = next(r for r in rows if r["model"] == "v1")
    n = v1["test_images"]
    deltas = {r["model"]: r["test_acc"] - v1["test_acc"] for r in rows if r is not v1}
    margin = noise_margin(v1["test_acc"], n, v1["test_acc"], n)
    worse = [k for k, d in deltas.items() if compare(d, margin) == REFUTES]
    better = [k for k, d in deltas.items() if compare(d, margin) == SUPPORTS]
    verdict = REFUTES if worse else SUPPORTS if better else INCONCLUSIVE
    if not learned([v1["test_acc"]]):
        verdict = INCONCLUSIVE
    listed = ", ".join(f"{k} {100 * d:+.1f}" for k, d in deltas.items())
    prefix = "" if learned([v1["test_acc"]]) else NOT_LEARNED
    return verdict, prefix + (
        f"accuracy vs v1 ({100 * v1['test_acc']:.1f}%), in points: {listed}; noise margin ±{100 * margin:.1f} "
        f"pts on {n} test images. Clearly better: {', '.join(better) or 'none'}; clearly worse: "
        f"{', '.join(worse) or 'none'}. {MARGIN_NOTE}"
    )
