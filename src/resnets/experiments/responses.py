"""Experiment `responses`: the paper's Figure 7, the standard deviation of each residual function's response
in trained plain nets and their ResNet twins, over seeds."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from matplotlib.figure import Figure
from torch import nn

from ..data import make_loader
from ..models.blocks import ResidualBlock
from ..train import TrainConfig
from ..train.loop import load_data
from .options import ExperimentOptions
from .report import NOT_LEARNED, RULE, ExperimentRun, Outcome, learned, markdown_table, ordered, pm
from .stats import INCONCLUSIVE, combine, mean_std
from .training import SHORT_RUN, TrainBudget, describe, train

CLAIM = (
    "ResNets have generally smaller responses than their plain counterparts, and the deeper the ResNet, the "
    "smaller its responses (He et al. 2016, Figure 7, CIFAR-10): the residual functions are closer to zero "
    "than non-residual functions, and each layer of a deeper ResNet modifies the signal less."
)
RECIPE = dict(SHORT_RUN)


@dataclass(frozen=True)
class ResponseBudget:
    train: TrainBudget
    depths: tuple[int, ...]  # plain and ResNet twins of each depth


# cpu: estimated, not run in full, from the epochs timed for degradation (ResNet-20 18 s, plain-56 36 s per 4,000
# CIFAR-10 images at 16 px, one thread, load average ~5): 3 seeds x 6 epochs x ~79 s per 3,000 ~ 24 minutes
BUDGETS = {
    "tiny": ResponseBudget(TrainBudget(epochs=1, limit=128, test_limit=100, batch_size=32, lr=0.025, image_size=8),
                           (20,)),
    "quick": ResponseBudget(TrainBudget(epochs=3, limit=2500, test_limit=1000, batch_size=64, lr=0.05,
                                        image_size=16), (20, 56)),
    "cpu": ResponseBudget(TrainBudget(epochs=6, limit=3000, test_limit=1000, batch_size=64, lr=0.05,
                                      image_size=16), (20, 56)),
    "full": ResponseBudget(TrainBudget(epochs=40, limit=None, test_limit=None, batch_size=128, lr=0.1),
                           (20, 56, 110)),
}  # fmt: skip


def response_stds(model: nn.Module, loader) -> list[float]:  # noqa: ANN001 (a BatchLoader)
    """Standard deviation, over all test images, channels and positions, of each block's last BatchNorm
    output: the residual function's response before the addition (the same position in a plain net)."""
    norms = [getattr(b, f"bn{b.num_convs}") for b in model.modules() if isinstance(b, ResidualBlock)]
    sums = torch.zeros(len(norms), 3, dtype=torch.float64)  # count, sum, sum of squares per layer

    def hook(index: int):  # noqa: ANN202
        def record(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            out = output.detach().double()  # read now: the block adds the shortcut to it in place afterwards
            sums[index] += torch.stack([torch.tensor(out.numel()), out.sum().cpu(), out.square().sum().cpu()])

        return record

    handles = [bn.register_forward_hook(hook(i)) for i, bn in enumerate(norms)]
    model.eval()
    try:
        with torch.no_grad():
            for x, _ in loader:
                model(x)
    finally:
        for h in handles:
            h.remove()
    count, total, squares = sums.unbind(1)
    return ((squares - total**2 / count) / (count - 1)).sqrt().tolist()


def run(options: ExperimentOptions) -> Outcome:
    """Train each twin once per seed, measure its blocks' response stds on the test images, plot and judge."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("responses", options)
    models = [f"cifar_{kind}{d}" for d in budget.depths for kind in ("plain", "resnet")]
    layers, nets = [], []
    loader = None
    for seed in options.seed_list:
        for name in models:
            history = train(
                options, budget.train, RECIPE, exp.dir / "runs" / f"{name}-seed{seed}", name, seed
            )
            if loader is None:  # the test images, normalised and sized as training saw them
                cfg = TrainConfig(data=options.data, data_root=options.data_root, limit=1, workers=0,
                                  test_limit=budget.train.test_limit, image_size=budget.train.image_size)  # fmt: skip
                device = next(history.model.parameters()).device
                loader = make_loader(load_data(cfg), "test", 256, train=False, device=device)
            stds = response_stds(history.model, loader)
            layers += [{"model": name, "seed": seed, "layer": i + 1, "std": s} for i, s in enumerate(stds)]
            nets.append({"model": name, "seed": seed, "mean_std": sum(stds) / len(stds),
                         "test_acc": history.test_acc})  # fmt: skip
    exp.save_csv("layers.csv", layers)
    exp.save_csv("nets.csv", nets)
    exp.save_json("responses.json", {"layers": layers, "nets": nets})
    plot = exp.save_figure(plot_responses(layers, models), "figure7.png")
    verdict, reasons = judge(nets, budget.depths)
    summary = [{"model": m, "mean_std": pm([n["mean_std"] for n in nets if n["model"] == m]),
                "test_acc": pm([n["test_acc"] for n in nets if n["model"] == m], percent=True),
                "blocks": sum(1 for r in layers if r["model"] == m and r["seed"] == options.seed)} for m in models]  # fmt: skip
    table = markdown_table(summary, {"model": "net", "blocks": "blocks", "mean_std": "mean response std",
                                     "test_acc": "test accuracy"})  # fmt: skip
    setup = [
        f"Nets: {', '.join(models)} (ResNets with option A shortcuts); each trained once per seed "
        f"{options.seed_list}",
        f"Recipe (identical for all): {describe(history.config)}",
        "Response: the output of each block's last BatchNorm, before the addition of the shortcut and the ReLU "
        "(in plain nets the same layer), read with a forward hook in evaluation mode on the test images; its "
        "standard deviation over all images, channels and positions. The paper plots every 3x3 layer's BN "
        "output; here one per block, the residual function's output",
    ]
    results = f"{plot}\n\n{table}\n\nPer block and seed: `layers.csv`."
    return exp.write_report(
        "Responses: residual functions are small", CLAIM, setup, results, verdict, reasons
    )


def plot_responses(layers: list[dict], models: list[str]) -> Figure:
    """Figure 7 layout: std per block in depth order (top) and sorted by magnitude (bottom), seed means."""
    fig = Figure(figsize=(9, 6.5))
    top, bottom = fig.subplots(2, 1)
    for name in models:
        blocks = sorted({r["layer"] for r in layers if r["model"] == name})
        means = [
            mean_std([r["std"] for r in layers if r["model"] == name and r["layer"] == b])[0] for b in blocks
        ]
        style = "--" if "plain" in name else "-"
        label = name.removeprefix("cifar_")
        top.plot(blocks, means, style, marker=".", label=label)
        bottom.plot(blocks, sorted(means, reverse=True), style, marker=".", label=label)
    top.set(xlabel="block (depth order)", ylabel="std", title="Response std of each residual function")
    bottom.set(xlabel="block (sorted by magnitude)", ylabel="std")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def judge(nets: list[dict], depths: tuple[int, ...]) -> tuple[str, str]:
    """Each ResNet's mean response std below its plain twin's, and the deepest ResNet's below the shallowest
    one's, by RULE over seeds."""

    def values(name: str, key: str = "mean_std") -> list[float]:
        return [n[key] for n in nets if n["model"] == name]

    parts, lines = [], []
    for d in depths:
        part = ordered(values(f"cifar_resnet{d}"), values(f"cifar_plain{d}"))
        parts.append(part)
        lines.append(f"depth {d}: ResNet {pm(values(f'cifar_resnet{d}'))} vs plain "
                     f"{pm(values(f'cifar_plain{d}'))} (claim: smaller: {part})")  # fmt: skip
    if len(depths) > 1:
        shallow, deep = values(f"cifar_resnet{min(depths)}"), values(f"cifar_resnet{max(depths)}")
        part = ordered(deep, shallow)
        parts.append(part)
        lines.append(
            f"ResNet-{max(depths)} {pm(deep)} vs ResNet-{min(depths)} {pm(shallow)} (claim: smaller: {part})"
        )
    reasons = "mean response std over blocks: " + "; ".join(lines) + ". " + RULE
    reference = [mean_std(values(f"cifar_resnet{d}", "test_acc"))[0] for d in depths]
    if not learned(reference):
        return INCONCLUSIVE, NOT_LEARNED + reasons
    return combine(parts), reasons
