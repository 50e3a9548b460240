"""Experiment `gradients`: per-layer gradient norms of plain CIFAR nets and their residual twins."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import cycle, islice

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from ..data import load_dataset, make_loader
from ..models import create_model
from ..train import TrainConfig
from ..train.runtime import resolve_runtime
from ..train.step import training_step
from .options import ExperimentOptions
from .report import REFUTES, SUPPORTS, ExperimentRun, Outcome, combine, compare, markdown_table

CLAIM = (
    "In a deep plain network the gradients reaching the early layers shrink (vanish), while skip "
    "connections keep them flowing: the residual twin's first layers get gradients of the same order as "
    "its last layers."
)
LR = 0.02  # low enough that the 110-layer plain net does not diverge in its first steps
FACTOR = 2.0  # a ratio must differ by more than this factor to count


@dataclass(frozen=True)
class GradientBudget:
    depths: tuple[int, ...]
    batch_size: int
    probe_batches: int  # batches averaged per gradient measurement
    steps: int  # SGD steps between the two measurements
    image_size: int | None


BUDGETS = {
    "tiny": GradientBudget((20, 56), 16, 1, 2, 8),
    "quick": GradientBudget((20, 56, 110), 32, 2, 50, 16),
    "full": GradientBudget((20, 56, 110), 128, 8, 300, None),
}


def conv_grad_norms(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """Mean gradient norm of each conv weight over `batches`, in forward order (stem first)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    totals = [0.0] * len(convs)
    model.train()  # BN normalises with batch statistics, as it does while training
    for x, y in batches:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        totals = [t + c.weight.grad.norm().item() for t, c in zip(totals, convs, strict=True)]
    model.zero_grad(set_to_none=True)
    return [t / len(batches) for t in totals]


def sgd_steps(model: nn.Module, loader, steps: int) -> float:
    """Train for `steps` SGD steps; returns the mean loss of the last few (NaN if it diverged)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()
    losses = []
    for x, y in islice(cycle(loader), steps):
        loss, _ = training_step(model, optimizer, x, y)
        losses.append(loss.item())
    tail = losses[-max(1, steps // 4) :]
    return sum(tail) / len(tail) if tail else math.nan


def run(options: ExperimentOptions) -> Outcome:
    """Measure, plot and judge the gradient norms of every conv layer, at initialisation and after training."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("gradients", options)
    device = resolve_runtime(TrainConfig(device=options.device)).device
    images = budget.batch_size * (budget.steps + budget.probe_batches)
    bundle = load_dataset(options.data, options.data_root, image_size=budget.image_size, limit=images)
    probe = list(islice(make_loader(bundle, "train", budget.batch_size, train=False, device=device),
                        budget.probe_batches))  # fmt: skip
    loader = make_loader(bundle, "train", budget.batch_size, train=True, device=device, seed=options.seed)
    layers, nets = [], []
    for depth in budget.depths:
        for kind in ("plain", "resnet"):
            name = f"cifar_{kind}{depth}"
            torch.manual_seed(options.seed)  # twins get identical conv weights (option A adds none)
            model = create_model(name, num_classes=bundle.num_classes, in_channels=bundle.channels).to(device)
            norms = {"init": conv_grad_norms(model, probe)}
            loss = sgd_steps(model, loader, budget.steps)
            norms["trained"] = conv_grad_norms(model, probe)
            for phase, values in norms.items():
                layers += [
                    {"model": name, "phase": phase, "layer": i, "grad_norm": v} for i, v in enumerate(values)
                ]
                nets.append({"model": name, "kind": kind, "depth": depth, "phase": phase, "first": values[0],
                             "last": values[-1], "first_over_last": values[0] / values[-1],
                             "loss_after_steps": loss})  # fmt: skip
    exp.save_csv("layers.csv", layers)
    exp.save_csv("ratios.csv", nets)
    exp.save_json("ratios.json", nets)
    plot = exp.save_figure(plot_norms(layers, budget.depths), "gradient_norms.png")
    verdict, reasons = judge(nets, max(budget.depths))
    table = markdown_table(nets, {"model": "net", "phase": "when", "first": "first-layer grad norm",
                                  "last": "last-layer grad norm", "first_over_last": "first / last"})  # fmt: skip
    size = f"{budget.image_size} px" if budget.image_size else "native size"
    setup = [
        f"Nets: cifar_plain{{{','.join(map(str, budget.depths))}}} and their residual twins cifar_resnet"
        f"{{{','.join(map(str, budget.depths))}}} (option A), built with the same seed so conv weights match",
        f"Gradient norm of every conv weight (stem = layer 0) for cross-entropy on {budget.probe_batches} real "
        f"training batch(es) of {budget.batch_size} ({size}), BN in training mode, averaged over batches",
        f"Measured at initialisation and after {budget.steps} SGD steps (lr {LR}, momentum 0.9, Nesterov, "
        "weight decay 5e-4, no augmentation) on the same data",
    ]
    results = f"{plot}\n\n{table}\n\nPer-layer numbers: `layers.csv`."
    return exp.write_report("Gradient flow: plain vs residual", CLAIM, setup, results, verdict, reasons)


def plot_norms(layers: list[dict], depths: tuple[int, ...]) -> Figure:
    """One panel per depth and phase: gradient norm vs layer index, plain vs residual, log scale."""
    fig = Figure(figsize=(4.2 * len(depths), 6.4))
    axes = fig.subplots(2, len(depths), squeeze=False)
    for row, phase in enumerate(("init", "trained")):
        for col, depth in enumerate(depths):
            ax = axes[row][col]
            for kind, style in (("plain", "o-"), ("resnet", "s-")):
                points = [r for r in layers if r["model"] == f"cifar_{kind}{depth}" and r["phase"] == phase]
                ax.plot([r["layer"] for r in points], [r["grad_norm"] for r in points], style, ms=2.5,
                        label=f"{kind}-{depth}")  # fmt: skip
            ax.set_yscale("log")
            ax.set(xlabel="conv layer (0 = stem)", ylabel="‖∂L/∂W‖", title=f"depth {depth}, {phase}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return fig


def judge(nets: list[dict], depth: int) -> tuple[str, str]:
    """The claim holds if, for the deepest pair, plain's first/last ratio is well below residual's and
    residual's ratio is much closer to 1 than plain's, both at initialisation and after training."""
    parts, lines = [], []
    for phase in ("init", "trained"):
        plain, res = (next(n for n in nets if n["kind"] == k and n["depth"] == depth and n["phase"] == phase)
                      for k in ("plain", "resnet"))  # fmt: skip
        rp, rr = plain["first_over_last"], res["first_over_last"]
        shrink = compare(math.log10(rr / rp), math.log10(FACTOR))
        even = compare(abs(math.log10(rp)) - abs(math.log10(rr)), math.log10(FACTOR))
        parts += [shrink, even]
        direction = "smaller" if rp < rr else "larger"
        lines.append(
            f"{phase}: in plain-{depth} the first layer's gradient is {rp:.3g}x the last layer's, in "
            f"resnet-{depth} {rr:.3g}x (plain's first/last ratio is {direction}: 'early gradients shrink' "
            f"{shrink}; 'skips keep gradients even across depth' {even})"
        )
    verdict = combine(parts)
    if parts[0] == REFUTES and parts[1] == SUPPORTS:
        lines.append(
            "at initialisation BatchNorm makes the plain net's gradients grow toward the input instead of "
            "shrinking (the paper notes they do not vanish; Yang et al. 2019 explain the explosion)"
        )
    if parts[0] == REFUTES and parts[2] == SUPPORTS:
        lines.append(
            "after training they have shrunk: the huge early updates inflated those layers' weights, and "
            "with BN a layer's gradient falls as its weight norm grows"
        )
    return verdict, "; ".join(lines) + "."
