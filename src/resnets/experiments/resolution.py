"""Experiment `resolution`: one trained net evaluated at several input sizes, thanks to global average
pooling, next to a flatten-head twin that only accepts the size it was built for."""

from __future__ import annotations

from dataclasses import replace

import torch
from matplotlib.figure import Figure
from torch import nn

from ..data import DataBundle, make_loader
from ..models import ResNet
from ..models.metadata import read_meta
from ..train import TrainConfig, evaluate
from ..train.loop import load_data
from ..train.runtime import resolve_runtime
from ..trained import load_trained
from .options import ExperimentOptions
from .report import ExperimentRun, Outcome, markdown_table, pm
from .stats import REFUTES, SUPPORTS, combine, mean_std
from .training import SHORT_RUN, TrainBudget, describe, train

CLAIM = (
    "Global average pooling makes a ResNet resolution-agnostic: the same weights give (N, classes) logits "
    "at any input size, whereas a flatten + Linear head is tied to the size it was built for."
)
MODEL = "cifar_resnet20"
RECIPE = dict(SHORT_RUN)
# trained at the data's own size, so that the other sizes are really "other"; the claim is about shapes, which
# one seed decides, so the cpu budget only trains longer. Estimated from a timed ResNet-20 epoch (18 s per 4,000
# images at 16 px, one thread, our loaded 2-core EPYC): 3 seeds x 5 epochs x ~80 s per 6,000 at 28 px ~ 20 min
BUDGETS = {
    "tiny": (TrainBudget(epochs=1, limit=64, test_limit=64, batch_size=32, lr=0.025), (0.5, 1.0, 1.5)),
    "quick": (
        TrainBudget(epochs=3, limit=4000, test_limit=1000, batch_size=64, lr=0.05),
        (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    ),
    "cpu": (
        TrainBudget(epochs=5, limit=6000, test_limit=2000, batch_size=64, lr=0.05),
        (0.5, 0.75, 1.0, 1.25, 1.5, 1.75),
    ),
    "full": (
        TrainBudget(epochs=15, limit=None, test_limit=None, batch_size=128, lr=0.1),
        (0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
    ),
}


class FlattenHeadResNet(ResNet):
    """The same ResNet with its pooling replaced by flatten + Linear, sized for `input_size` px inputs."""

    def __init__(self, base: ResNet, input_size: int) -> None:
        super().__init__(base.spec, base.num_classes, base.in_channels)
        self.load_state_dict(base.state_dict())  # the trained backbone; only the head differs
        with torch.no_grad():
            probe = self.forward_features(torch.zeros(1, base.in_channels, input_size, input_size))
        self.flat_fc = nn.Linear(probe[0].numel(), base.num_classes)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat_fc(torch.flatten(x, 1))


def run(options: ExperimentOptions) -> Outcome:
    """Train (or load) the net once per seed, then evaluate it and its flatten twin at every size."""
    budget, factors = BUDGETS[options.budget]
    exp = ExperimentRun("resolution", options)
    runtime = resolve_runtime(TrainConfig(device=options.device))
    trained = load_trained(options.weights) if options.weights else None
    if trained is not None:
        models = {options.seed: trained.model}
        source = f"weights `{options.weights}` (the seeds do not apply)"
    else:
        models, recipe = {}, ""
        for seed in options.seed_list:
            history = train(options, budget, RECIPE, exp.dir / f"train-seed{seed}", MODEL, seed)
            models[seed], recipe = history.model, describe(history.config)
        source = f"{MODEL} trained here once per seed {options.seed_list}: {recipe}"
    first = next(iter(models.values()))
    bundle = load_data(TrainConfig(model=MODEL, data=options.data, data_root=options.data_root, limit=1,
                                   test_limit=budget.test_limit, in_channels=first.in_channels))  # fmt: skip
    named = trained is not None and "classes" in read_meta(trained.path)  # ours name them; others count
    if trained is not None and (
        trained.classes != bundle.classes if named else trained.model.num_classes != bundle.num_classes
    ):
        raise ValueError(f"{trained.path} predicts {len(trained.classes)} classes ({', '.join(trained.classes[:3])}, ...) "
                         f"but {options.data} has {bundle.num_classes} ({', '.join(bundle.classes[:3])}, ...): give "
                         "--data the data set the weights were trained on")  # fmt: skip
    native = bundle.image_size[0]
    sizes = sorted({round(native * f) for f in factors})
    rows = []
    for seed, model in models.items():
        model = model.to(runtime.device).eval()
        twin = FlattenHeadResNet(model, native).to(runtime.device).eval()
        rows += [
            measure(model, twin, replace(bundle, image_size=(s, s)), runtime) | {"seed": seed} for s in sizes
        ]
    exp.save_csv("sizes.csv", rows)
    exp.save_json("sizes.json", {"native": native, "rows": rows})
    plot = exp.save_figure(plot_accuracy(rows, native), "accuracy_vs_size.png")
    verdict, reasons = judge(rows, native)
    summary = [{"size": s, "accuracy": pm([r["accuracy"] for r in rows if r["size"] == s], percent=True),
                "gap_output": next(r["gap_output"] for r in rows if r["size"] == s),
                "flatten_output": next(r["flatten_output"] for r in rows if r["size"] == s)} for s in sizes]  # fmt: skip
    table = markdown_table(summary, {"size": "input px", "accuracy": "GAP net accuracy", "gap_output": "GAP output",
                                     "flatten_output": "flatten twin"})  # fmt: skip
    per_seed = markdown_table(
        rows, {"size": "input px", "seed": "seed", "accuracy": "accuracy"}, percent=("accuracy",)
    )
    setup = [
        f"Weights: {source}",
        f"Evaluated on {len(bundle.test)} test images resized (bilinear, antialiased) from {native} px to each size",
        f"Flatten twin: the same trained backbone with flatten + Linear({twin.flat_fc.in_features}, "
        f"{twin.flat_fc.out_features}) sized for {native} px instead of global average pooling "
        "(its head is untrained: only whether it runs matters here)",
    ]
    results = f"{plot}\n\n{table}\n\nPer seed:\n\n{per_seed}"
    return exp.write_report("Resolution: global average pooling", CLAIM, setup, results, verdict, reasons)


def try_shape(model: nn.Module, x: torch.Tensor) -> str:
    """The output shape as text, or the error the model raises for this input."""
    try:
        with torch.no_grad():
            return "x".join(map(str, model(x).shape))
    except (RuntimeError, ValueError) as e:
        return f"error: {str(e).splitlines()[0]}"


def measure(model: ResNet, twin: ResNet, bundle: DataBundle, runtime) -> dict:
    """Accuracy and output shape of the GAP net, and the flatten twin's output or error, at one size."""
    loader = make_loader(bundle, "test", 256, train=False, device=runtime.device)
    x, _ = next(iter(loader))
    result = evaluate(model, loader, bundle.num_classes, runtime)
    return {"size": bundle.image_size[0], "accuracy": result.top1, "gap_output": try_shape(model, x),
            "flatten_output": try_shape(twin, x)}  # fmt: skip


def plot_accuracy(rows: list[dict], native: int) -> Figure:
    """Accuracy vs input size (mean over seeds); crosses mark the sizes where the flatten twin fails."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    sizes = sorted({r["size"] for r in rows})
    means = [100 * mean_std([r["accuracy"] for r in rows if r["size"] == s])[0] for s in sizes]
    ax.plot(sizes, means, "o-", label="GAP net (same weights)")
    failed = sorted({r["size"] for r in rows if r["flatten_output"].startswith("error")})
    ax.plot(failed, [0] * len(failed), "x", color="tab:red", ms=10, label="flatten twin: error")
    ax.axvline(native, color="gray", ls=":", label=f"training size {native} px")
    ax.set(xlabel="input size (px)", ylabel="test accuracy (%)", ylim=(-5, 100), title="One net, many sizes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def judge(rows: list[dict], native: int) -> tuple[str, str]:
    """Shape part, for every seed: GAP logits everywhere, the twin only at the native size. Accuracy is
    reported (mean ± std over seeds), not judged."""
    classes_ok = all(not r["gap_output"].startswith("error") for r in rows)
    twin_ok = all(r["flatten_output"].startswith("error") == (r["size"] != native) for r in rows)
    verdict = combine(SUPPORTS if ok else REFUTES for ok in (classes_ok, twin_ok))
    at = {s: [r["accuracy"] for r in rows if r["size"] == s] for s in sorted({r["size"] for r in rows})}
    others = [s for s in at if s != native]
    worst = min(others, key=lambda s: mean_std(at[s])[0]) if others else native
    drop = mean_std(at[worst])[0] < mean_std(at[native])[0] - 0.05
    ran = sorted({r["size"] for r in rows if not r["flatten_output"].startswith("error")})
    return verdict, (
        f"GAP net gave logits at {sum(not r['gap_output'].startswith('error') for r in rows)}/{len(rows)} "
        f"(size, seed) pairs; the flatten twin ran only at {ran} px. Accuracy is {pm(at[native], True)} at the "
        f"training size {native} px and {pm(at[worst], True)} at {worst} px, the worst other size"
        + (": running is not the same as working, the filters learned one object scale." if drop else ".")
    )
