"""Choose between recipe candidates on a validation split, never on test: each candidate is `resnets train
--preset P --val-split F --seed S` plus its own flags, run alone and timed (wall time of the whole command).
Writes results.json (appended after every run, so a stopped selection resumes) and report.md with each
candidate's validation accuracy and minutes. The test split is evaluated by the runs, as every run does, but
this script never reads it.

    python scripts/select_on_validation.py --preset fast --val-split 0.083333 --out docs/time-to-accuracy/fast-selection \\
        --candidate fast-12= --candidate "prog16-12=--progressive-from 16"

`--existing NAME=RUN_DIR@WALL_S` records a run made earlier with the same command shape (its config.json
must show the preset's validation split and seed) instead of running it again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from resnets.files import atomic_write_text
from resnets.machine import load_average
from resnets.provenance import generated_by, invocation, provenance
from resnets.train.config import apply_preset


def train_command(args: argparse.Namespace, flags: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "resnets", "train", "--preset", args.preset, "--val-split", str(args.val_split),
            "--seed", str(args.seed), "--out", str(out), "--overwrite", "--quiet", *shlex.split(flags)]  # fmt: skip


# run bookkeeping, not part of a recipe
NOT_RECIPE = ("out", "quiet", "val_split", "seed", "data_root", "workers")


def recipe_flags(config: dict, preset: str) -> str:
    """What a run's saved config changes from the preset, as flags (the candidate's recipe, read back)."""
    base = json.loads(apply_preset(preset, {}).to_json())
    changed = {k: v for k, v in config.items() if k not in NOT_RECIPE and base.get(k) != v}
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(changed.items()))


def source_line(results: dict) -> str:
    """The commit and command a run's results.json names (every run writes them)."""
    source = results["source"]
    return f"commit {source['commit']}{' (with uncommitted changes)' if source['dirty'] else ''}; command {source['command']}"


def record(name: str, preset: str, out: Path, wall: float, load: tuple[float, ...]) -> dict:
    """A finished run's validation numbers (its selected epoch's validation accuracy) and how it ran."""
    results = json.loads((out / "results.json").read_text())
    config = json.loads((out / "config.json").read_text())
    return {"name": name, "flags": recipe_flags(config, preset), "source": source_line(results), "wall_s": wall, "load_before": load,
            "val_acc": results["val"]["accuracy"], "best_epoch": results["best_epoch"], "epochs": results["epochs"],
            "val_split": config["val_split"], "seed": config["seed"],
            "runtime": json.loads((out / "runtime.json").read_text())}  # fmt: skip


def report(saved: dict, args: argparse.Namespace) -> str:
    source, machine = saved["source"], saved["source"]["machine"]
    lines = [
        f"# Recipe selection on validation: `--preset {args.preset}` candidates",
        "",
        generated_by(source),
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; torch {torch.__version__}; seed {args.seed}; "
        f"validation split {args.val_split} of the training images (carved per class, seeded). One run per "
        "candidate, alone, wall time of the whole `resnets train` command. One seed: differences under "
        "about 0.2 points are within the seeds' spread.",
        "",
        "| candidate | changes to the preset | validation acc | wall (min) | format | ran at |",
        "|---|---|--:|--:|---|---|",
    ]
    for r in saved["runs"]:
        fmt = r["runtime"]["precision"] + (", channels_last" if r["runtime"]["channels_last"] else "")
        lines.append(f"| {r['name']} | `{r['flags'] or '(preset)'}` | {100 * r['val_acc']:.2f}% | "
                     f"{r['wall_s'] / 60:.2f} | {fmt} | {r['source']} |")  # fmt: skip
    lines += ["", "The test split is not read here: the chosen recipe's test accuracy is measured afterwards, "
              "with 3 seeds, by scripts/time_to_accuracy.py.", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--val-split", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", default="runs/selection", help="where the runs' folders go")
    parser.add_argument("--candidate", action="append", default=[], metavar="NAME=FLAGS")
    parser.add_argument("--existing", action="append", default=[], metavar="NAME=RUN_DIR@WALL_S")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    saved = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    saved["source"] = provenance(invocation(), torch.device("cpu"))
    done = {r["name"] for r in saved["runs"]}
    for item in args.existing:
        name, rest = item.split("=", 1)
        run_dir, wall = rest.rsplit("@", 1)
        config = json.loads((Path(run_dir) / "config.json").read_text())
        if (config["val_split"], config["seed"]) != (args.val_split, args.seed):
            raise SystemExit(
                f"{run_dir}: val_split/seed {config['val_split']}/{config['seed']} differ from the selection's"
            )
        if name not in done:
            saved["runs"].append(record(name, args.preset, Path(run_dir), float(wall), ()))
    for item in args.candidate:
        name, flags = item.split("=", 1)
        if name in done:
            continue
        run_dir = Path(args.work) / name
        load, start = load_average(), time.perf_counter()
        subprocess.run(train_command(args, flags, run_dir), check=True)
        saved["runs"].append(record(name, args.preset, run_dir, time.perf_counter() - start, load))
        atomic_write_text(path, json.dumps(saved, indent=2))
    atomic_write_text(path, json.dumps(saved, indent=2))
    atomic_write_text(out / "report.md", report(saved, args))
    print(report(saved, args))


if __name__ == "__main__":
    main()
