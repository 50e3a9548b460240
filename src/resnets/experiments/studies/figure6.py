"""Studies `figure6` and `figure7`: the paper's CIFAR-10 degradation experiment (Figure 6, Table 6) at full
scale, and Figure 7's layer responses read off the same trained nets (no extra training).

He et al. 2016, section 4.2: plain nets and ResNets of 6n+2 layers on all 50k training images at 32 px with
4 px pad-and-crop and flips, evaluated single-view on the 10k test images. The paper trains 64k iterations
(164 epochs) with lr 0.1 divided by 10 twice; these studies state a shorter schedule (below)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure

from ...data import make_loader
from ...train import PRESETS, History
from ...train.loop import load_data
from ..responses import response_stds
from ..stats import INCONCLUSIVE, REFUTES, SUPPORTS, Difference, combine, lower, pm
from ..training import SHORT_RUN
from .runner import Arm, Report, Study, StudyResults

# the paper's Table 6 test errors (%, best of 5 runs for ResNet-110, single runs otherwise)
TABLE6 = {"cifar_resnet20": 8.75, "cifar_resnet32": 7.51, "cifar_resnet44": 7.17, "cifar_resnet56": 6.97,
          "cifar_resnet110": 6.43}  # fmt: skip
NETS = (
    "cifar_plain20",
    "cifar_plain56",
    "cifar_resnet20",
    "cifar_resnet32",
    "cifar_resnet44",
    "cifar_resnet56",
)
# the nets Figure 6's orderings compare: their units train first (all seeds), ResNet-32/44 (Table 6) after
COMPARED = ("cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56")

# A stated shorter schedule than the paper's 164 epochs: 30 epochs of SGD (Nesterov momentum 0.9, batch 128,
# weight decay 5e-4) with a one-cycle lr peaking at 0.1 after one warm-up epoch; no label smoothing, no
# validation split (the last epoch is the model, as the paper reports), single-view test.
RECIPE: dict[str, Any] = SHORT_RUN | {
    "data": "cifar10", "epochs": 30, "batch_size": 128, "lr": 0.1, "limit": None, "test_limit": None,
    "image_size": None, "crop_padding": 4, "tta": False, "precision": "auto", "compile": None,
    "shortcut": None, "spec_overrides": None,
}  # fmt: skip


def measure(history: History) -> dict[str, Any]:
    """Figure 7's numbers: the std of each block's response on the test images, from the trained net."""
    cfg = history.config
    device = next(history.model.parameters()).device
    loader = make_loader(load_data(cfg), "test", 256, train=False, device=device)
    return {"response_std": response_stds(history.model, loader)}


def error(key: str):  # noqa: ANN201 (a callable on unit records)
    """The final epoch's training error (`train`) or the final model's test error (`test`) of a unit."""
    if key == "train":
        return lambda u: 1 - u["epochs"][-1]["train_acc"]
    return lambda u: 1 - u["test"]["accuracy"]


def compare(
    results: StudyResults, low: str, high: str, key: Callable[[dict], float]
) -> tuple[str, Difference]:
    """Welch's verdict on "net `low` has the lower `key` than net `high`", the nets named as the paper does."""
    name = lambda net: net.removeprefix("cifar_").replace("plain", "plain-").replace("resnet", "ResNet-")  # noqa: E731
    return lower(results.values(low, key), results.values(high, key), (name(low), name(high)))


def curves_figure(results: StudyResults) -> bytes:
    """Figure 6's layout: plain nets left, ResNets right; thin dashed training error, bold test error, per
    epoch, the mean over the recorded seeds."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    colors = {"20": "tab:orange", "32": "tab:blue", "44": "tab:green", "56": "tab:red", "110": "black"}
    for ax, family in zip(axes, ("plain", "resnet"), strict=True):
        for net in (n for n in NETS if family in n):
            units = [u for u in results.units if u["arm"] == net]
            if not units:
                continue
            depth = net.removeprefix(f"cifar_{family}")
            length = min(len(u["epochs"]) for u in units)
            epochs = range(1, length + 1)
            for key, style, width in (("train_acc", "--", 1.0), ("test_acc", "-", 2.2)):
                mean = [100 * (1 - sum(u["epochs"][e - 1][key] for u in units) / len(units)) for e in epochs]
                ax.plot(epochs, mean, style, lw=width, color=colors[depth],
                        label=f"{family}-{depth} {'train' if key == 'train_acc' else 'test'}")  # fmt: skip
        ax.set(
            xlabel="epoch", ylabel="error (%)", title="plain" if family == "plain" else "ResNet", ylim=(0, 40)
        )
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    return png(fig)


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def report_figure6(results: StudyResults) -> Report:
    """Verdicts: plain-56 trains worse than plain-20 (degradation), ResNet-56 trains and tests better than
    ResNet-20; and the table beside the paper's Table 6."""
    train, test = error("train"), error("test")
    v = results.values
    checks = [
        ("plain-56 has a higher final training error than plain-20", compare(results, "cifar_plain20", "cifar_plain56", train)),
        ("ResNet-56 has a lower final training error than ResNet-20", compare(results, "cifar_resnet56", "cifar_resnet20", train)),
        ("ResNet-56 has a lower test error than ResNet-20 (Table 6)", compare(results, "cifar_resnet56", "cifar_resnet20", test)),
    ]  # fmt: skip
    verdict = combine([c[1][0] for c in checks])
    reasons = "; ".join(f"{claim}: **{part}** ({d.text()})" for claim, (part, d) in checks)
    rows = ["| net | seeds | final training error (%) | test error (%) | paper's Table 6 (%) | ours − paper |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for net in NETS:
        errs = v(net, test)
        paper = TABLE6.get(net)
        gap = f"{100 * sum(errs) / len(errs) - paper:+.2f}" if errs and paper else "–"
        rows.append(f"| {net} | {len(errs)} | {pm(v(net, train))} | {pm(errs)} | {paper or '–'} | {gap} |")
    body = (
        "![Figure 6](figure6.png)\n\nThin dashed lines: training error (the mean over each epoch's augmented "
        "batches); bold lines: test error; the mean over the recorded seeds.\n\n" + "\n".join(rows) + "\n\n"
        "Test errors are single-view on all 10,000 test images, of the last epoch's model. The paper's numbers "
        "come from its 164-epoch schedule; ours from the 30-epoch one above, so the gap measures the schedule "
        "as much as the implementation; the `figure6-schedule` study trains a pilot seed at the paper's schedule "
        "to check that the orderings hold there too. Per-unit histories: `units/*.json`."
    )
    if verdict == INCONCLUSIVE:
        reasons += ". Inconclusive parts need more seeds (p ≥ 0.05 or fewer than 2 seeds per net)"
    headline = "; ".join(f"{net.removeprefix('cifar_')} {pm(v(net, test))}% (paper {TABLE6[net]}%)"
                         for net in NETS if net in TABLE6 and v(net, test)) or "no unit yet"  # fmt: skip
    return Report(verdict, reasons, body, "test error: " + headline, {"figure6.png": curves_figure(results)})


def mean_response(unit: dict[str, Any]) -> float:
    stds = unit["measured"]["response_std"]
    return sum(stds) / len(stds)


def responses_figure(results: StudyResults) -> bytes:
    """Figure 7's layout: per-block response std in depth order (top) and sorted by magnitude (bottom)."""
    fig = Figure(figsize=(9, 6.5))
    top, bottom = fig.subplots(2, 1)
    for net in ("cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56"):
        units = [u for u in results.units if u["arm"] == net]
        if not units:
            continue
        blocks = len(units[0]["measured"]["response_std"])
        means = [sum(u["measured"]["response_std"][b] for u in units) / len(units) for b in range(blocks)]
        style = "--" if "plain" in net else "-"
        label = net.removeprefix("cifar_")
        top.plot(range(1, blocks + 1), means, style, marker=".", label=label)
        bottom.plot(range(1, blocks + 1), sorted(means, reverse=True), style, marker=".", label=label)
    top.set(xlabel="block (depth order)", ylabel="std", title="Response std of each block (test images)")
    bottom.set(xlabel="block (sorted by magnitude)", ylabel="std")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return png(fig)


def report_figure7(results: StudyResults) -> Report:
    """Verdicts: each ResNet's mean response std is below its plain twin's, and ResNet-56's below ResNet-20's."""
    v = results.values
    checks = [
        ("ResNet-20 responses smaller than plain-20's", compare(results, "cifar_resnet20", "cifar_plain20", mean_response)),
        ("ResNet-56 responses smaller than plain-56's", compare(results, "cifar_resnet56", "cifar_plain56", mean_response)),
        ("ResNet-56 responses smaller than ResNet-20's", compare(results, "cifar_resnet56", "cifar_resnet20", mean_response)),
    ]  # fmt: skip
    reasons = "; ".join(f"{claim}: **{part}** ({d.text(scale=1, unit='')})" for claim, (part, d) in checks)
    rows = ["| net | seeds | mean response std over blocks |", "|---|---|---|"]
    for net in ("cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56"):
        values = v(net, mean_response)
        rows.append(f"| {net} | {len(values)} | {pm(values, scale=1, digits=3)} |")
    body = (
        "![Figure 7](figure7.png)\n\n" + "\n".join(rows) + "\n\nResponse: the output of each block's last "
        "BatchNorm, before the shortcut is added and before the ReLU (in a plain net the same layer), read with a "
        "forward hook in evaluation mode over the 10,000 test images; its standard deviation over images, "
        "channels and positions. The paper plots every 3x3 layer; this is one per block, the residual "
        "function's output. The nets are the `figure6` study's units."
    )
    headline = "mean response std: " + "; ".join(
        f"{net.removeprefix('cifar_')} {pm(v(net, mean_response), scale=1, digits=3)}"
        for net in ("cifar_plain20", "cifar_resnet20", "cifar_plain56", "cifar_resnet56") if v(net, mean_response)
    )  # fmt: skip
    figures = {"figure7.png": responses_figure(results)}
    return Report(combine([c[1][0] for c in checks]), reasons, body, headline, figures)


CLAIM6 = (
    "He et al. 2016, Figure 6 and Table 6 (CIFAR-10): with the same recipe, the deeper plain net (56 layers) "
    "has a higher training error than the shallower one (20 layers), the degradation problem; the deeper "
    "ResNet has a lower training error and a lower test error (Table 6: 8.75 / 7.51 / 7.17 / 6.97% for "
    "ResNet-20 / 32 / 44 / 56)."
)
CLAIM7 = (
    "He et al. 2016, Figure 7 (CIFAR-10): ResNets have generally smaller layer responses than their plain "
    "counterparts, and the deeper ResNet has smaller responses than the shallower one."
)
ARMS = tuple(Arm(net, {"model": net}) for net in NETS)
FIGURE6 = Study("figure6", "Figure 6 and Table 6 at full scale: deeper plain nets train worse, deeper ResNets "
                "better", CLAIM6, RECIPE, ARMS, seeds=3, report=report_figure6, measure=measure, first=COMPARED)  # fmt: skip
FIGURE7 = Study("figure7", "Figure 7 at full scale: residual functions respond less than plain layers",
                CLAIM7, RECIPE, ARMS, seeds=3, report=report_figure7, measure=measure, reads="figure6")  # fmt: skip


# The paper's own schedule (section 4.2), everything else as RECIPE: 64k iterations of batch 128 on the 50k
# training images (164 epochs), SGD at lr 0.1 (momentum 0.9, not Nesterov) divided by 10 at 32k and 48k
# iterations (epochs 82 and 123), weight decay 1e-4, no warm-up (the paper warms up only ResNet-110).
# The optimizer and schedule come from the `paper` preset (milestones are fractions of the run).
PAPER_SCHEDULE: dict[str, Any] = {
    k: PRESETS["paper"][k]
    for k in (
        "schedule",
        "milestones",
        "gamma",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "warmup_epochs",
    )
} | {"epochs": 164}
# Figure 6's three orderings: (the net that should have the lower error, the other one, which error)
ORDERINGS = (
    ("cifar_plain20", "cifar_plain56", "train"),
    ("cifar_resnet56", "cifar_resnet20", "train"),
    ("cifar_resnet56", "cifar_resnet20", "test"),
)


def ordering_kept(results: StudyResults, seed: int, lower_net: str, higher_net: str, key: str) -> str | None:
    """Whether `lower_net` has the lower `key` error at both schedules on `seed` (None: a unit is missing)."""
    found = {}
    for schedule, units in (("paper", results.units), ("short", results.beside)):
        errs = {u["arm"]: error(key)(u) for u in units if u["seed"] == seed}
        if lower_net not in errs or higher_net not in errs:
            return None
        found[schedule] = errs[lower_net] < errs[higher_net]
    return "kept" if found["paper"] == found["short"] else "changed"


def report_schedule(results: StudyResults) -> Report:
    """Each Figure 6 ordering at the paper's schedule against the 30-epoch one, seed by seed (a pilot: one
    seed shows whether the short schedule changes an ordering, not how significant it is)."""
    seeds = sorted({u["seed"] for u in results.units})
    rows = ["| seed | ordering | 164 epochs | 30 epochs | |", "|---|---|---|---|---|"]
    outcomes = []
    for seed in seeds or [0]:
        for low, high, key in ORDERINGS:
            kept = ordering_kept(results, seed, low, high, key)
            outcomes.append(kept)
            cells = []
            for units in (results.units, results.beside):
                errs = {u["arm"]: 100 * error(key)(u) for u in units if u["seed"] == seed}
                cells.append(f"{errs[low]:.2f} vs {errs[high]:.2f}" if low in errs and high in errs else "–")
            name = f"{low.removeprefix('cifar_')} < {high.removeprefix('cifar_')} ({key} error, %)"
            rows.append(f"| {seed} | {name} | {cells[0]} | {cells[1]} | {kept or 'units missing'} |")
    verdict = REFUTES if "changed" in outcomes else SUPPORTS if None not in outcomes else INCONCLUSIVE
    reasons = {SUPPORTS: "every ordering is the same at both schedules", REFUTES: "an ordering differs between "
               "the schedules: the 30-epoch study's verdicts do not stand for the paper's schedule",
               INCONCLUSIVE: "a unit of one schedule or the other is missing"}[verdict]  # fmt: skip
    table = ["| net | seeds | 164 epochs: training error (%) | test error (%) | paper's Table 6 (%) |",
             "|---|---|---|---|---|"]  # fmt: skip
    for net in COMPARED:
        table.append(f"| {net} | {len(results.values(net, error('test')))} | "
                     f"{pm(results.values(net, error('train')))} | {pm(results.values(net, error('test')))} | "
                     f"{TABLE6.get(net, '–')} |")  # fmt: skip
    body = ("\n".join(rows) + "\n\n" + "\n".join(table) + "\n\nThe 30-epoch numbers are the `figure6` study's "
            "units of the same seed. Per-epoch histories: `units/*.json`.")  # fmt: skip
    headline = "; ".join(f"{n.removeprefix('cifar_')} {pm(results.values(n, error('test')))}% (paper {TABLE6[n]}%)"
                         for n in COMPARED if n in TABLE6 and results.values(n, error("test")))  # fmt: skip
    return Report(verdict, reasons, body, "164 epochs, test error: " + (headline or "no unit yet"))


SCHEDULE = Study(
    "figure6-schedule",
    "Figure 6 at the paper's 164-epoch schedule: does the 30-epoch schedule keep its orderings?",
    "The `figure6` study trains 30 epochs (one-cycle) instead of the paper's 164 (step schedule); its "
    "verdicts stand for the paper's setting only if each Figure 6 ordering (plain-56 trains worse than "
    "plain-20; ResNet-56 trains and tests better than ResNet-20) is the same at both schedules on a pilot seed.",
    RECIPE | PAPER_SCHEDULE,
    tuple(a for a in ARMS if a.label in COMPARED),
    seeds=1,
    report=report_schedule,
    beside=FIGURE6,
)


def report_resnet110(results: StudyResults) -> Report:
    """ResNet-110 against ResNet-56 on test error (Welch's t-test), beside the paper's Table 6."""
    test = error("test")
    err = {net: results.values(net, test) for net in ("cifar_resnet56", "cifar_resnet110")}
    verdict, d = lower(err["cifar_resnet110"], err["cifar_resnet56"], ("ResNet-110", "ResNet-56"))
    reasons = f"ResNet-110 has a lower test error than ResNet-56: **{verdict}** ({d.text()})"
    paper = {"cifar_resnet56": "6.97 (one run)", "cifar_resnet110": "6.43 (best of 5; mean 6.61 ± 0.16)"}
    rows = [
        "| net | seeds | test error (%) | final training error (%) | paper's Table 6 (%) |",
        "|---|---|---|---|---|",
    ]
    rows += [f"| {net} | {len(err[net])} | {pm(err[net])} | {pm(results.values(net, error('train')))} | "
             f"{paper[net]} |" for net in err]  # fmt: skip
    body = "\n".join(rows) + (
        "\n\nThe same 30-epoch recipe as the `figure6` study, whose ResNet-56 units are reused here (same "
        "settings, same seeds); the paper's gap is about half a point, hence five seeds per net. Per-unit "
        "histories: `units/*.json`."
    )
    headline = f"test error: resnet110 {pm(err['cifar_resnet110'])}% (paper 6.61 ± 0.16%, best 6.43%)"
    return Report(verdict, reasons, body, headline)


RESNET110 = Study(
    "resnet110",
    "Table 6's ResNet-110: the deepest CIFAR ResNet tests better still",
    "He et al. 2016, Table 6 (CIFAR-10): ResNet-110 reaches 6.43% test error (best of 5 runs; 6.61 ± 0.16% "
    "mean), lower than ResNet-56's 6.97%. A unit takes about 2x a ResNet-56 one: a study for a lent GPU.",
    RECIPE,
    tuple(Arm(net, {"model": net}) for net in ("cifar_resnet56", "cifar_resnet110")),
    seeds=5,
    report=report_resnet110,
)
