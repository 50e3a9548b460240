"""Time to accuracy of a preset on this machine: `resnets train --preset P` run once per seed, one after the
other (nothing else should run meanwhile), each timed from the command's start to its end. The final model
(the last epoch: no validation split, nothing is selected) is what the accuracy claim is about; the per-epoch
test curve is drawn only to show where the time goes. Writes results.json (appended after every run, so a
stopped study resumes), report.md and accuracy-vs-minutes.png to --out.

    python scripts/time_to_accuracy.py --preset fast --target 94 --minutes 10 --seeds 3 --out docs/time-to-accuracy/fast
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from resnets.bench.run import matmul_gflops  # noqa: E402
from resnets.files import atomic_write_text  # noqa: E402
from resnets.machine import load_average  # noqa: E402
from resnets.provenance import generated_by, invocation, provenance  # noqa: E402


def reference_gflops() -> float:
    """fp32 GFLOP/s of a 1024² matmul on all cores, timed in about a second just before a seed: the
    machine's speed at that moment, since it drifts between hours (~25% seen) more than a budget's margin."""
    return matmul_gflops(torch.device("cpu"), torch.float32, 1024, warmup=2, repeats=5, min_time=0.2)


def run_one(args: argparse.Namespace, seed: int) -> dict:
    """Train one seed in its own process, as a user would, and read back its numbers."""
    out = Path(args.work) / f"{args.preset}-seed{seed}"
    command = [sys.executable, "-m", "resnets", "train", "--preset", args.preset, "--seed", str(seed),
               "--out", str(out), "--overwrite", "--quiet", *args.extra]  # fmt: skip
    load, reference = load_average(), reference_gflops()
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    results = json.loads((out / "results.json").read_text())
    split = "val" if results["val"] is not None else "test"
    return {"seed": seed, "wall_s": wall, "test_acc": results["test"]["accuracy"], "load_before": load,
            "reference_gflops": reference, "best_epoch": results["best_epoch"], "epochs": results["epochs"],
            "curve_split": split,
            "runtime": json.loads((out / "runtime.json").read_text()),
            "curve": [(float(r["seconds"]), float(r[f"{split}_acc"]) if r[f"{split}_acc"] else None)
                      for r in rows]}  # fmt: skip


def candidate_points(paths: list[str]) -> list[tuple[str, float, float, float]]:
    """Other studies' results.json as (label, mean minutes, mean final test accuracy %, its std)."""
    points = []
    for path in paths:
        saved = json.loads(Path(path).read_text())
        accs = [100 * r["test_acc"] for r in saved["runs"]]
        label = f"{Path(path).parent.name} ({len(accs)} seeds)"
        points.append((label, statistics.mean(r["wall_s"] / 60 for r in saved["runs"]), statistics.mean(accs),
                       statistics.stdev(accs) if len(accs) > 1 else 0.0))  # fmt: skip
    return points


def plot(runs: list[dict], args: argparse.Namespace, path: Path) -> None:
    """Each seed's curve (epochs' own time; the points are its evaluated epochs) ending in its final test
    accuracy at its whole command's wall time, and the --candidates studies' means (± std) as markers."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        minutes, accs, spent = [], [], 0.0
        for seconds, acc in run["curve"]:
            spent += seconds
            if acc is not None:
                minutes.append(spent / 60)
                accs.append(100 * acc)
        line = ax.plot(
            minutes, accs, marker=".", alpha=0.6, label=f"seed {run['seed']} ({run['curve_split']})"
        )
        ax.plot(run["wall_s"] / 60, 100 * run["test_acc"], "*", markersize=11, color=line[0].get_color())
    for label, minutes, acc, std in candidate_points(args.candidates):
        ax.errorbar(minutes, acc, yerr=std, fmt="s", capsize=3, label=f"candidate {label}")
    ax.axhline(args.target, color="grey", linestyle="--", label=f"target {args.target}%")
    ax.axvline(args.minutes, color="grey", linestyle=":", label=f"{args.minutes} min")
    ax.set_ylim(args.target - 6, min(100, args.target + 3))  # zoomed on the target: early epochs fall below
    ax.set_xlabel("minutes")
    ax.set_ylabel("accuracy %")
    ax.set_title(f"--preset {args.preset}: curves per evaluated epoch; * final test accuracy at wall time")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(runs: list[dict], args: argparse.Namespace, source: dict) -> str:
    accs = [100 * r["test_acc"] for r in runs]
    walls = [r["wall_s"] / 60 for r in runs]
    spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
    met = statistics.mean(accs) >= args.target and max(walls) <= args.minutes
    machine = source["machine"]
    lines = [
        f"# Time to accuracy: `--preset {args.preset}` (target {args.target}% in {args.minutes} min)",
        "",
        generated_by(source),
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; torch {torch.__version__}; seeds {', '.join(str(r['seed']) for r in runs)}; "
        "each seed run alone, one after the other, wall time of the whole `resnets train` command.",
        "",
        "| seed | final test acc | wall (min) | format | threads | load avg before | fp32 matmul GFLOP/s before |",
        "|--:|--:|--:|---|--:|--:|--:|",
    ]
    for r in runs:
        fmt = r["runtime"]["precision"] + (", channels_last" if r["runtime"]["channels_last"] else "")
        reference = f"{r['reference_gflops']:.0f}" if "reference_gflops" in r else "-"  # older studies: none
        lines.append(f"| {r['seed']} | {100 * r['test_acc']:.2f}% | {r['wall_s'] / 60:.1f} | {fmt} | "
                     f"{r['runtime'].get('cpu_threads', '?')} | {r['load_before'][0]:.2f} | {reference} |")  # fmt: skip
    lines += [
        "",
        f"**Final test accuracy {statistics.mean(accs):.2f} ± {spread:.2f}% (mean ± std over {len(runs)} seeds), "
        f"wall {statistics.mean(walls):.1f} min (max {max(walls):.1f}): target "
        + ("met" if met else "not met")
        + ".**",
        "",
        selection_note(runs),
        "",
        *(
            [
                "Other candidates drawn in the plot (mean ± std of final test accuracy at mean wall time): "
                + "; ".join(
                    f"{label}: {acc:.2f} ± {std:.2f}% in {minutes:.1f} min"
                    for label, minutes, acc, std in candidate_points(args.candidates)
                ),
                "",
            ]
            if args.candidates
            else []
        ),
        "![accuracy against minutes](accuracy-vs-minutes.png)",
        "",
    ]
    return "\n".join(lines)


def selection_note(runs: list[dict]) -> str:
    if runs[0]["curve_split"] == "val":
        chosen = ", ".join(f"seed {r['seed']}: epoch {r['best_epoch']} of {r['epochs']}" for r in runs)
        return (
            "The accuracy is the official test split, evaluated once, on the epoch with the best accuracy on "
            f"the validation split carved from the training images ({chosen}); the plot's curves are that "
            "validation split."
        )
    return (
        "The accuracy is the last epoch's model on the official test split (no validation split, so nothing "
        "is selected on test); the plot's per-epoch points are the same test split, shown only as a curve."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--target", type=float, required=True, help="test accuracy %% aimed at")
    parser.add_argument("--minutes", type=float, required=True, help="wall-time budget per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="runs/time-to-accuracy", help="where the runs' folders go")
    parser.add_argument("--candidates", nargs="*", default=[], help="other studies' results.json to plot too")
    parser.add_argument("extra", nargs="*", help="more `resnets train` flags (after --)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "results.json"
    runs = json.loads(saved.read_text())["runs"] if saved.is_file() else []
    source = provenance(invocation(), torch.device("cpu"))
    for seed in range(args.seeds):
        if any(r["seed"] == seed for r in runs):
            continue
        runs.append(run_one(args, seed))
        atomic_write_text(saved, json.dumps({"provenance": source, "runs": runs}, indent=1))
        print(
            f"seed {seed}: {100 * runs[-1]['test_acc']:.2f}% in {runs[-1]['wall_s'] / 60:.1f} min", flush=True
        )
    plot(runs, args, out / "accuracy-vs-minutes.png")
    atomic_write_text(out / "report.md", report(runs, args, source))


if __name__ == "__main__":
    main()
