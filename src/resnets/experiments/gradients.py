"""Experiment `gradients`: per-layer gradient norms of plain CIFAR nets and their residual twins, at
initialisation and after a short training that the plain nets survive, over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import cycle, islice
from statistics import fmean as mean

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
from .report import RULE, ExperimentRun, Outcome, markdown_table, ordered, pm
from .stats import INCONCLUSIVE, combine

CLAIM = (
    "In a deep plain network the gradients reaching the early layers shrink (vanish), while skip "
    "connections keep them flowing: the residual twin's first layers get gradients of the same order as "
    "its last layers."
)
# Measured on Fashion-MNIST at 16 px, batch 32, 100-200 steps (one thread): plain-110 stays at chance loss
# (ln 10 = 2.30) at lr 0.02, 0.005 and 0.001; plain-56 falls from 2.29 to 1.68 at lr 0.005 (1.89 at 0.01) and
# plain-32 to 1.14 at 0.01. So the deepest plain net here is 56 layers and the lr 0.005: a net that trains.
LR = 0.005
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # SGD with Nesterov momentum, no augmentation
FACTOR = 2.0  # the minimum effect: a ratio must differ by more than this factor to count
TRAINED_LOSS = 0.9 * math.log(10)  # a net "trained" if its final loss is 10% below chance


@dataclass(frozen=True)
class GradientBudget:
    depths: tuple[int, ...]
    batch_size: int
    probe_batches: int  # batches averaged per gradient measurement
    steps: int  # SGD steps between the two measurements
    image_size: int | None


# cpu: estimated from the measurement above (plain-56: 200 steps in 22-94 s, depending on the machine's load):
# 3 seeds x 6 nets (depths 20, 32, 56, plain and residual) x 200 steps of 32 images ~ 15 minutes on one thread
BUDGETS = {
    "tiny": GradientBudget((20, 56), 16, 1, 2, 8),
    "quick": GradientBudget((20, 32, 56), 32, 2, 200, 16),
    "cpu": GradientBudget((20, 32, 56), 32, 4, 200, 16),
    "full": GradientBudget((20, 32, 56), 128, 8, 600, None),
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


def conv_weight_norms(model: nn.Module) -> list[float]:
    return [m.weight.norm().item() for m in model.modules() if isinstance(m, nn.Conv2d)]


def sgd_steps(model: nn.Module, loader, steps: int) -> tuple[float, float]:  # noqa: ANN001 (a BatchLoader)
    """Train for `steps` SGD steps; returns the mean loss of the first and of the last quarter of them."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY
    )
    model.train()
    losses = [training_step(model, optimizer, x, y)[0].item() for x, y in islice(cycle(loader), steps)]
    quarter = max(1, steps // 4)
    return sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter


def run(options: ExperimentOptions) -> Outcome:
    """Measure, plot and judge gradient and weight norms of every conv layer, at init and after training."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("gradients", options)
    device = resolve_runtime(TrainConfig(device=options.device)).device
    images = budget.batch_size * (budget.steps + budget.probe_batches)
    bundle = load_dataset(options.data, options.data_root, image_size=budget.image_size, limit=images)
    probe = list(islice(make_loader(bundle, "train", budget.batch_size, train=False, device=device),
                        budget.probe_batches))  # fmt: skip
    layers, nets = [], []
    for seed in options.seed_list:
        loader = make_loader(bundle, "train", budget.batch_size, train=True, device=device, seed=seed)
        for depth in budget.depths:
            for kind in ("plain", "resnet"):
                name = f"cifar_{kind}{depth}"
                torch.manual_seed(seed)  # twins get identical conv weights (option A adds none)
                model = create_model(name, num_classes=bundle.num_classes, in_channels=bundle.channels).to(
                    device
                )
                state = {"init": (conv_grad_norms(model, probe), conv_weight_norms(model))}
                loss_start, loss_end = sgd_steps(model, loader, budget.steps)
                state["trained"] = (conv_grad_norms(model, probe), conv_weight_norms(model))
                for phase, (grads, weights) in state.items():
                    layers += [{"model": name, "seed": seed, "phase": phase, "layer": i, "grad_norm": g,
                                "weight_norm": w} for i, (g, w) in enumerate(zip(grads, weights, strict=True))]  # fmt: skip
                    nets.append({"model": name, "kind": kind, "depth": depth, "seed": seed, "phase": phase,
                                 "first": grads[0], "last": grads[-1], "first_over_last": grads[0] / grads[-1],
                                 "first_weight": weights[0], "loss_first_steps": loss_start,
                                 "loss_last_steps": loss_end})  # fmt: skip
    exp.save_csv("layers.csv", layers)
    exp.save_csv("ratios.csv", nets)
    exp.save_json("ratios.json", nets)
    plot = exp.save_figure(plot_norms(layers, budget.depths, options.seed), "gradient_norms.png")
    verdict, reasons = judge(nets, max(budget.depths), budget.steps)
    table = markdown_table(nets, {"model": "net", "seed": "seed", "phase": "when", "first": "first-layer grad norm",
                                  "last": "last-layer grad norm", "first_over_last": "first / last",
                                  "first_weight": "first-layer weight norm",
                                  "loss_last_steps": "loss, last quarter of steps"})  # fmt: skip
    size = f"{budget.image_size} px" if budget.image_size else "native size"
    setup = [
        f"Nets: cifar_plain{{{','.join(map(str, budget.depths))}}} and their residual twins cifar_resnet"
        f"{{{','.join(map(str, budget.depths))}}} (option A), built with the same seed so conv weights match; "
        f"seeds {options.seed_list}",
        f"Gradient norm of every conv weight (stem = layer 0) for cross-entropy on {budget.probe_batches} real "
        f"training batch(es) of {budget.batch_size} ({size}), BN in training mode, averaged over batches",
        f"Measured at initialisation and after {budget.steps} SGD steps (lr {LR}, momentum {MOMENTUM}, "
        f"Nesterov, weight decay {WEIGHT_DECAY}, no augmentation) on the same data; a net counts as trained "
        f"when its mean loss over the last quarter of the steps is below {TRAINED_LOSS:.2f} (chance: ln 10 = 2.30)",
    ]
    results = f"{plot}\n\n{table}\n\nPer-layer numbers (gradient and weight norms): `layers.csv`."
    return exp.write_report("Gradient flow: plain vs residual", CLAIM, setup, results, verdict, reasons)


def plot_norms(layers: list[dict], depths: tuple[int, ...], seed: int) -> Figure:
    """One panel per depth and phase: gradient norm vs layer index, plain vs residual, log scale (first seed)."""
    fig = Figure(figsize=(4.2 * len(depths), 6.4))
    axes = fig.subplots(2, len(depths), squeeze=False)
    for row, phase in enumerate(("init", "trained")):
        for col, depth in enumerate(depths):
            ax = axes[row][col]
            for kind, style in (("plain", "o-"), ("resnet", "s-")):
                points = [r for r in layers if r["model"] == f"cifar_{kind}{depth}" and r["phase"] == phase
                          and r["seed"] == seed]  # fmt: skip
                ax.plot([r["layer"] for r in points], [r["grad_norm"] for r in points], style, ms=2.5,
                        label=f"{kind}-{depth}")  # fmt: skip
            ax.set_yscale("log")
            ax.set(
                xlabel="conv layer (0 = stem)",
                ylabel="‖∂L/∂W‖",
                title=f"depth {depth}, {phase} (seed {seed})",
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    return fig


def judge(nets: list[dict], depth: int, steps: int) -> tuple[str, str]:
    """For the deepest pair, in each phase: plain's first/last gradient ratio below residual's ('early
    gradients shrink') and residual's ratio closer to 1 ('even'), each by RULE over seeds on log10 ratios with a
    smallest effect of FACTOR. After training the parts count only if the plain net trained."""
    parts, lines = [], []

    def pick(kind: str, phase: str, key: str) -> list[float]:
        return [n[key] for n in nets if n["kind"] == kind and n["depth"] == depth and n["phase"] == phase]

    floor = math.log10(FACTOR)
    plain_loss = pick("plain", "trained", "loss_last_steps")
    trained = sum(plain_loss) / len(plain_loss) < TRAINED_LOSS
    for phase in ("init", "trained"):
        rp, rr = pick("plain", phase, "first_over_last"), pick("resnet", phase, "first_over_last")
        lp, lr = [math.log10(v) for v in rp], [math.log10(v) for v in rr]
        shrink = ordered(lp, lr, floor)
        even = ordered([abs(v) for v in lr], [abs(v) for v in lp], floor)
        if phase == "trained" and not trained:
            shrink = even = INCONCLUSIVE
        parts += [shrink, even]
        lines.append(
            f"{phase}: in plain-{depth} the first layer's gradient is {pm(rp)}x the last layer's, in "
            f"resnet-{depth} {pm(rr)}x ('early gradients shrink' {shrink}; 'skips keep gradients even across "
            f"depth' {even})"
        )
    w0, w1 = (mean(pick("plain", phase, "first_weight")) for phase in ("init", "trained"))
    g0, g1 = (mean(pick("plain", phase, "first")) for phase in ("init", "trained"))
    lines.append(
        f"measured in plain-{depth}: loss {pm(pick('plain', 'trained', 'loss_first_steps'))} over the first quarter "
        f"of the {steps} steps and {pm(plain_loss)} over the last ({'trained' if trained else 'did NOT train'}); "
        f"from init to trained its first layer's gradient norm changed {g1 / g0:.3g}x and its weight norm "
        f"{w1 / w0:.3g}x. A conv followed by BatchNorm is scale-invariant (its gradient scales as 1 / weight "
        f"norm), so the weights' growth alone accounts for a {w0 / w1:.3g}x change of the gradient"
        + (
            f", {math.log(w1 / w0) / math.log(g0 / g1):.0%} of the measured fall (in log terms)"
            if g1 < g0 and w1 > w0
            else ""
        )
    )
    smallest = f" The smallest effect that counts: a factor of {FACTOR:g} between the ratios."
    return combine(parts), "; ".join(lines) + ". " + RULE + smallest
