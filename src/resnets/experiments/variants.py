"""Experiment `variants` (the d2l exercises): ResNet v1, v1.5, v1d, pre-activation and ResNeXt at several
cardinalities, as small CIFAR-stem bottleneck nets of (nearly) equal MACs, trained with one recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from matplotlib.figure import Figure

from ..models import ResNet, count_params, get_entry, summarize
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
from .stats import INCONCLUSIVE, REFUTES, SUPPORTS, mean_std
from .training import SHORT_RUN, TrainBudget, describe, final_row, train

CLAIM = (
    "The refinements of the original ResNet (v1.5's stride in the 3x3, v1d's average-pool shortcut, "
    "v2's pre-activation, ResNeXt's grouped convolutions) are at least as accurate as v1 at the same compute, "
    "and at least one of them is clearly better. (Xie et al. 2017, Table 3, on ImageNet: at ResNet-50's "
    "compute, ResNeXt 2x40d / 4x24d / 8x14d lower top-1 error from 23.9% to 23.0 / 22.6 / 22.3%.)"
)
# label -> zoo model whose spec is shrunk; the ResNeXt rows change groups/base_width of v1.5
VARIANTS = {"v1": "resnet50_v1", "v1.5": "resnet50", "v1d": "resnet50d", "pre-act (v2)": "preact_resnet50"}
MACS_TOLERANCE = 0.03  # a variant counts as matched in compute when its MACs are within 3% of v1.5's
RECIPE = dict(SHORT_RUN)


@dataclass(frozen=True)
class VariantBudget:
    train: TrainBudget
    layers: tuple[int, ...]  # bottleneck blocks per stage of the small nets
    widths: tuple[int, ...]
    cardinalities: tuple[int, ...]  # ResNeXt groups; groups=1 is v1.5 itself


# cpu: depth 20 (2 blocks per stage), where groups 2/4/8 match v1.5's MACs within 2.2% (1 block per stage: 3.8%).
# Estimated, not run in full: these nets cost about ResNet-20's MACs at 16 px, whose epoch of 4,000 CIFAR-10
# images (+ 1,000 test) took 18 s on our shared 2-core EPYC (one thread, load average ~5); grouped convs run
# slower, so ~19 s per epoch of 3,000: 7 nets x 3 seeds x 4 epochs ~ 27 minutes
BUDGETS = {
    "tiny": VariantBudget(TrainBudget(epochs=1, limit=64, test_limit=64, batch_size=32, lr=0.025, image_size=8),
                          (1, 1, 1), (8, 16, 32), (2,)),
    "quick": VariantBudget(TrainBudget(epochs=3, limit=3000, test_limit=1000, batch_size=64, lr=0.05, image_size=16),
                           (1, 1, 1), (16, 32, 64), (2, 4, 8)),
    "cpu": VariantBudget(TrainBudget(epochs=4, limit=3000, test_limit=2000, batch_size=64, lr=0.05, image_size=16),
                         (2, 2, 2), (16, 32, 64), (2, 4, 8)),
    "full": VariantBudget(TrainBudget(epochs=30, limit=None, test_limit=None, batch_size=128, lr=0.1),
                          (3, 3, 3), (16, 32, 64), (2, 4, 8)),
}  # fmt: skip


def macs_of(model: str, overrides: dict[str, Any], channels: int, side: int) -> int:
    """MACs of a zoo model's spec with `overrides`, from the zoo's summary on the meta device."""
    with torch.device("meta"):
        net = ResNet(get_entry(model).spec.with_(**overrides), num_classes=10, in_channels=channels)
        return summarize(net, (channels, side, side)).macs


def matched_base_width(groups: int, base: dict[str, Any], target: int, channels: int, side: int) -> int:
    """The ResNeXt base width whose MACs at `groups` come closest to `target`, by bisection (MACs grow with it)."""

    def macs(width: int) -> int:
        return macs_of("resnet50", base | {"groups": groups, "base_width": width}, channels, side)

    low, high = 4, 256  # smallest width reaching the target lies in (low, high]; below 4 a stage may get 0
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
    """Build each variant small, train it once per seed with the shared recipe, and compare error and MACs."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("variants", options)
    channels = 1 if options.data == "fashion-mnist" else 3
    side = budget.train.image_size or (28 if options.data == "fashion-mnist" else 32)
    specs = variant_specs(budget, channels, side)
    costs = {label: macs_of(model, overrides, channels, side) for label, (model, overrides) in specs.items()}
    rows = []
    for seed in options.seed_list:
        for i, (label, (model, overrides)) in enumerate(specs.items()):
            out = exp.dir / "runs" / f"{i}-{model}-seed{seed}"
            history = train(options, budget.train, RECIPE, out, model, seed, spec_overrides=overrides)
            changes = f"{overrides['groups']} x {overrides['base_width']}" if "groups" in overrides else ""
            rows.append(final_row(label, history, seed) | {
                "zoo_model": model, "changes": changes, "params": count_params(history.model),
                "mmacs": costs[label] / 1e6, "macs_vs_v1.5": costs[label] / costs["v1.5"] - 1,
            })  # fmt: skip
    exp.save_csv("results.csv", rows)
    exp.save_json("results.json", {"base_overrides": {"stem": "cifar", "layers": budget.layers,
                                   "widths": budget.widths}, "rows": rows})  # fmt: skip
    plot = exp.save_figure(plot_results(rows), "variants.png")
    verdict, reasons = judge(rows)
    summary = seed_summary(rows, "model", ("test_error", "train_error", "seconds"))
    for row in summary:
        first = next(r for r in rows if r["model"] == row["model"])
        row |= {k: first[k] for k in ("zoo_model", "changes", "params", "mmacs")}
        row["macs_vs"] = f"{100 * first['macs_vs_v1.5']:+.1f}%"
    table = markdown_table(summary, {"model": "variant", "zoo_model": "from", "changes": "groups x base width",
                                     "params": "params", "mmacs": "MMACs", "macs_vs": "MACs vs v1.5",
                                     "test_error": "test error", "train_error": "final training error",
                                     "seconds": "seconds", "seeds": "seeds"})  # fmt: skip
    per_seed = markdown_table(rows, {"model": "variant", "seed": "seed", "test_error": "test error"},
                              percent=("test_error",))  # fmt: skip
    print("MACs per image: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in costs.items()))
    depth = 3 * sum(budget.layers) + 2
    setup = [
        f"Each variant is its zoo model's spec shrunk with `TrainConfig.spec_overrides`: CIFAR stem (3x3, 16), "
        f"bottleneck blocks {budget.layers} per stage (depth {depth}), widths {budget.widths}; nothing is "
        "registered. v1d keeps its average-pool shortcut but, with the CIFAR stem, not its deep stem",
        f"ResNeXt: v1.5 with groups {budget.cardinalities} and the base width that brings its MACs closest to "
        f"v1.5's (groups=1, base width 64), found by counting with the zoo's `summarize` at {side} px; matched "
        f"means within {100 * MACS_TOLERANCE:.0f}%",
        f"Recipe (identical for all): {describe(history.config)}; seeds {options.seed_list}",
    ]
    results = f"{plot}\n\n{table}\n\nPer seed:\n\n{per_seed}"
    return exp.write_report("Variants at matched compute", CLAIM, setup, results, verdict, reasons)


def plot_results(rows: list[dict]) -> Figure:
    """Test accuracy vs MACs (labelled, mean over seeds), and training time per variant."""
    fig = Figure(figsize=(11, 4.5))
    ax_acc, ax_time = fig.subplots(1, 2)
    accuracy = by_label(rows, "model", "test_acc")
    seconds = by_label(rows, "model", "seconds")
    mmacs = {r["model"]: r["mmacs"] for r in rows}
    for label, values in accuracy.items():
        mean = 100 * mean_std(values)[0]
        ax_acc.scatter(mmacs[label], mean, s=20)
        ax_acc.annotate(label, (mmacs[label], mean), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax_acc.set(xlabel="MMACs per image", ylabel="test accuracy (%)", title="Accuracy vs compute")
    ax_acc.grid(alpha=0.3)
    ax_time.barh(list(seconds), [mean_std(v)[0] for v in seconds.values()], color="tab:gray")
    ax_time.set(xlabel="training seconds", title="Time (same recipe)")
    return fig


def judge(rows: list[dict]) -> tuple[str, str]:
    """Each variant's test error against v1's by RULE; ResNeXt rows count only when matched in MACs."""
    errors = by_label(rows, "model", "test_error")
    v1 = errors.pop("v1")
    unmatched = sorted({r["model"] for r in rows if r["changes"] and abs(r["macs_vs_v1.5"]) > MACS_TOLERANCE})
    cost = {r["model"]: r["macs_vs_v1.5"] for r in rows}
    off = [f"{k} {100 * d:+.1f}%" for k, d in cost.items() if abs(d) > MACS_TOLERANCE and k not in unmatched]
    better = [k for k, e in errors.items() if ordered(e, v1) == SUPPORTS]
    worse = [k for k, e in errors.items() if ordered(e, v1) == REFUTES]
    verdict = REFUTES if worse else SUPPORTS if better else INCONCLUSIVE
    if unmatched or not learned([1 - mean_std(v1)[0]]):
        verdict = INCONCLUSIVE
    listed = ", ".join(f"{k} {pm(e, True)}" for k, e in errors.items())
    prefix = "" if learned([1 - mean_std(v1)[0]]) else NOT_LEARNED
    matched = f"not matched in MACs: {', '.join(unmatched)}. " if unmatched else ""
    if (
        off
    ):  # v1's stride in the 1x1 makes it cheaper: a variant beating it may be buying accuracy with compute
        matched += (f"MACs more than {100 * MACS_TOLERANCE:.0f}% from v1.5's (not matched, the nets' own design): "
                    f"{', '.join(off)}. ")  # fmt: skip
    return verdict, prefix + matched + (
        f"test error of v1 {pm(v1, True)}; {listed}. Clearly better than v1: {', '.join(better) or 'none'}; "
        f"clearly worse: {', '.join(worse) or 'none'}. {RULE}"
    )
