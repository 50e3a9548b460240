"""Experiment `complexity`: parameters and MACs of every zoo model against the paper's Tables 1 and 6,
and measured inference speed on this machine."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from matplotlib.figure import Figure

from ..models import count_macs, count_params, create_model, get_entry, list_models
from ..train import TrainConfig
from ..train.runtime import resolve_runtime
from .options import ExperimentOptions
from .report import ExperimentRun, Outcome, markdown_table
from .stats import REFUTES, SUPPORTS, combine

CLAIM = (
    "The zoo reproduces the paper's cost figures: Table 1 (ResNet-18/34/50/101/152: 1.8/3.6/3.8/7.6/11.3 "
    "GFLOPs, i.e. multiply-adds, at 224 px) and Table 6 (CIFAR ResNet-20/32/44/56/110/1202: "
    "0.27/0.46/0.66/0.85/1.7/19.4 M parameters); and ResNet-50's bottleneck design costs only about 5% more "
    "than ResNet-34 although it is 16 layers deeper."
)
# paper name -> (zoo model, value); Table 1 in GMACs, Table 6 in millions of parameters
TABLE1 = {"ResNet-18": ("resnet18", 1.8), "ResNet-34": ("resnet34", 3.6), "ResNet-50": ("resnet50_v1", 3.8),
          "ResNet-101": ("resnet101_v1", 7.6), "ResNet-152": ("resnet152_v1", 11.3)}  # fmt: skip
TABLE6 = {f"ResNet-{d}": (f"cifar_resnet{d}", p) for d, p in ((20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85),
                                                             (110, 1.7), (1202, 19.4))}  # fmt: skip
TOLERANCE = 0.05  # the paper rounds to 2-3 digits
BOTTLENECK_RANGE = (1.0, 1.10)  # ResNet-50 (v1) / ResNet-34 MACs: "only slightly more"


@dataclass(frozen=True)
class ComplexityBudget:
    all_models: bool  # False: only the models of the paper's tables, with MACs only where Table 1 needs them
    timed: tuple[str, ...]
    batch_size: int
    repeats: int


BUDGETS = {
    "tiny": ComplexityBudget(False, ("cifar_resnet20",), 2, 1),
    "quick": ComplexityBudget(True, ("cifar_resnet20", "cifar_resnet56", "resnet18", "resnet50"), 8, 3),
    "cpu": ComplexityBudget(True, ("cifar_resnet20", "cifar_resnet56", "cifar_resnet110", "resnet18", "resnet34",
                                   "resnet50", "resnet50_v1"), 16, 5),  # about 2 minutes on 2 cores
    "full": ComplexityBudget(True, ("cifar_resnet20", "cifar_resnet56", "cifar_resnet110", "resnet18", "resnet34",
                                    "resnet50", "resnet50_v1", "resnet101", "resnet152", "resnext50_32x4d",
                                    "wide_resnet50_2"), 32, 5),
}  # fmt: skip


def cost(name: str, with_macs: bool = True) -> dict:
    """Parameters and MACs of one model, counted on the meta device (no memory, no real arithmetic)."""
    side = get_entry(name).spec.default_input_size
    with torch.device("meta"):
        model = create_model(name)
        row = {"model": name, "depth": get_entry(name).spec.depth, "input": side,
               "params_m": count_params(model) / 1e6}  # fmt: skip
        if with_macs:
            row["gmacs"] = count_macs(model, (3, side, side)) / 1e9
    return row


def images_per_second(name: str, batch_size: int, repeats: int, device: torch.device) -> float:
    """Inference throughput (eval mode, fp32) at the model's table input size: median of `repeats` batches."""
    side = get_entry(name).spec.default_input_size
    model = create_model(name).to(device).eval()
    x = torch.randn(batch_size, 3, side, side, device=device)
    seconds = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first pass warms up
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
    return batch_size / statistics.median(seconds[1:])


def run(options: ExperimentOptions) -> Outcome:
    """Count every model, compare with the paper, time a subset, and write the tables."""
    budget = BUDGETS[options.budget]
    exp = ExperimentRun("complexity", options)
    device = resolve_runtime(TrainConfig(device=options.device)).device
    paper_models = [m for m, _ in (*TABLE1.values(), *TABLE6.values())] + ["resnet50"]
    names = list_models() if budget.all_models else paper_models
    needs_macs = {m for m, _ in TABLE1.values()} | {"resnet50"}
    rows = {name: cost(name, budget.all_models or name in needs_macs) for name in names}
    for name in budget.timed:
        rows[name]["images_per_s"] = images_per_second(name, budget.batch_size, budget.repeats, device)
    paper = [
        paper_row(label, rows[m], "gmacs", value, "Table 1 (GMACs)") for label, (m, value) in TABLE1.items()
    ]
    paper += [
        paper_row(label, rows[m], "params_m", value, "Table 6 (M params)")
        for label, (m, value) in TABLE6.items()
    ]
    ratio = rows["resnet50_v1"]["gmacs"] / rows["resnet34"]["gmacs"]
    exp.save_csv("zoo.csv", list(rows.values()))
    exp.save_csv("paper.csv", paper)
    exp.save_json(
        "complexity.json", {"zoo": list(rows.values()), "paper": paper, "resnet50_v1_over_34": ratio}
    )
    plot = exp.save_figure(plot_costs(list(rows.values())), "params_vs_macs.png")
    verdict, reasons = judge(paper, ratio)
    zoo_table = markdown_table(list(rows.values()), {"model": "model", "depth": "depth", "input": "input px",
                               "params_m": "params (M)", "gmacs": "GMACs", "images_per_s": "images/s"})  # fmt: skip
    paper_table = markdown_table(paper, {"table": "paper table", "paper": "paper name", "model": "zoo model",
                                 "paper_value": "paper", "measured": "measured", "deviation": "deviation"})  # fmt: skip
    setup = [
        "MACs (multiply-accumulates, the paper's 'FLOPs') counted with torch.utils.flop_counter for one image "
        "at 224 px (CIFAR nets at 32 px), 1000 classes (CIFAR nets 10), on the meta device",
        "Table 1's ResNet-50/101/152 are compared with the `_v1` models (stride in the 1x1, as the paper); "
        "the torchvision v1.5 layout (`resnet50`) costs more because its stride sits in the 3x3",
        f"Speed: eval-mode fp32 forward passes, batch {budget.batch_size}, median of {budget.repeats} repeats "
        f"on {device} for {', '.join(budget.timed)}; other jobs on a shared machine make it approximate",
        "Parameters and MACs are exact counts, so seeds do not apply and the verdict needs no spread",
    ]
    results = (
        f"### Against the paper\n\n{paper_table}\n\nResNet-50 (v1) / ResNet-34 MACs: **{ratio:.3f}** "
        f"({rows['resnet50_v1']['gmacs']:.2f} vs {rows['resnet34']['gmacs']:.2f} GMACs); torchvision's "
        f"v1.5 ResNet-50: {rows['resnet50']['gmacs']:.2f} GMACs.\n\n{plot}\n\n### Every model\n\n{zoo_table}"
    )
    return exp.write_report("Complexity: parameters, MACs and speed", CLAIM, setup, results, verdict, reasons)


def paper_row(label: str, row: dict, key: str, value: float, table: str) -> dict:
    return {"table": table, "paper": label, "model": row["model"], "paper_value": value, "measured": row[key],
            "rel_error": row[key] / value - 1, "deviation": f"{100 * (row[key] / value - 1):+.1f}%"}  # fmt: skip


def plot_costs(rows: list[dict]) -> Figure:
    """Parameters vs MACs of every counted model, log-log, labelled."""
    fig = Figure(figsize=(8, 6))
    ax = fig.subplots()
    for r in (r for r in rows if "gmacs" in r):
        color = "tab:blue" if r["input"] == 224 else "tab:green"
        ax.scatter(r["gmacs"], r["params_m"], color=color, s=14)
        ax.annotate(
            r["model"], (r["gmacs"], r["params_m"]), fontsize=6, xytext=(3, 2), textcoords="offset points"
        )
    ax.set(xscale="log", yscale="log", xlabel="GMACs per image (224 px; CIFAR nets 32 px)", ylabel="parameters (M)",
           title="The zoo: parameters vs compute")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    return fig


def judge(paper: list[dict], ratio: float) -> tuple[str, str]:
    """Every paper number within TOLERANCE, and the bottleneck ratio within BOTTLENECK_RANGE."""
    worst = max(paper, key=lambda r: abs(r["rel_error"]))
    tables_ok = abs(worst["rel_error"]) <= TOLERANCE
    ratio_ok = BOTTLENECK_RANGE[0] <= ratio <= BOTTLENECK_RANGE[1]
    verdict = combine(SUPPORTS if ok else REFUTES for ok in (tables_ok, ratio_ok))
    return verdict, (
        f"largest deviation from the paper: {worst['paper']} ({worst['table']}) {100 * worst['rel_error']:+.1f}% "
        f"(tolerance ±{100 * TOLERANCE:.0f}%); ResNet-50 (v1) costs {100 * (ratio - 1):.1f}% more MACs than "
        f"ResNet-34 (claim: 0-10%)."
    )
