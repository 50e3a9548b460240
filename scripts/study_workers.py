"""Keep a session's CPU busy with study units, and hand their progress on before the machine goes.

    python scripts/study_workers.py start figure6 --data-root ../shared/data/cifar10    # two workers
    ...                                                                                  # other work
    python scripts/study_workers.py status figure6     # each unit's epoch, whether a worker holds it, its ETA
    python scripts/study_workers.py park figure6       # before the session ends; then commit docs/experiments

`start` checks out HEAD into a clean worktree (units name a clean commit) and starts `--workers` niced
processes, one torch thread each (two such workers beat one two-thread run on the 2-core AMD EPYC: see
docs/experiments/README.md), each running `resnets study` for every study named, in turn: a worker resumes a
parked unit first, then takes the next missing one that no other worker holds. `park` copies every unfinished
unit's checkpoint into the study's `parked/` folder and rewrites the reports, ready to commit.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def resnets(study: str, work: Path, *extra: str) -> list[str]:
    """`resnets study` on the committed folder of `study`, its run folders under `work`."""
    return [sys.executable, "-m", "resnets", "study", study, "--out", str(ROOT / "docs" / "experiments" / study),
            "--work", str(work / study), *extra]  # fmt: skip


def worktree(path: Path) -> Path:
    """A clean checkout of HEAD at `path` (made once per commit)."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    tree = path / head[:10]
    if not tree.is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), head], check=True)
    return tree


def start(args: argparse.Namespace) -> int:
    tree = worktree(args.trees)
    env = os.environ | {"PYTHONPATH": str(tree / "src")}
    args.logs.mkdir(parents=True, exist_ok=True)
    extra = ["--threads", str(args.threads), "--mixed-commits"] + (
        ["--data-root", str(args.data_root)] if args.data_root else []
    )
    for i in range(args.workers):
        steps = " ; ".join(shlex.join(resnets(s, args.work, *extra)) for s in args.studies)
        log = args.logs / f"worker-{i}.log"
        subprocess.Popen(["nice", "-n", "10", "sh", "-c", steps], env=env, cwd=ROOT, stdout=log.open("a"),
                         stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        print(f"worker {i}: {steps}\n  log: {log}")
    return 0


def park(args: argparse.Namespace) -> int:
    for study in args.studies:
        subprocess.run(resnets(study, args.work, "--park"), cwd=ROOT, check=True)
        subprocess.run(resnets(study, args.work, "--report-only"), cwd=ROOT, check=True)
    print("now commit docs/experiments (units/, parked/, reports) and README.md")
    return 0


def unit_status(run: Path, recorded: bool) -> str:
    """One line: the unit, its epochs done of planned, whether it is training now, and the time left at its
    median epoch."""
    metrics = run / "metrics.csv"
    rows = list(csv.DictReader(metrics.open())) if metrics.is_file() else []
    config = run / "config.json"
    settings = json.loads(config.read_text()) if config.is_file() else None
    planned = settings["freeze_epochs"] + settings["epochs"] if settings else None  # fine_tune's both phases
    from resnets.train.folder import in_use

    state = "recorded" if recorded else "training" if in_use(run) else "stopped"
    line = f"{run.name}: {state}, epoch {len(rows)} of {planned or '?'}"
    if rows and planned and not recorded:
        median = statistics.median(float(r["seconds"]) for r in rows)
        line += f", median epoch {median:.0f} s, ~{(planned - len(rows)) * median / 60:.0f} min left"
    return line


def status(args: argparse.Namespace) -> int:
    for study in args.studies:
        recorded = {p.stem for p in (ROOT / "docs" / "experiments" / study / "units").glob("*.json")}
        runs = sorted(p for p in (args.work / study).glob("*-seed*") if p.is_dir())
        print(f"{study}: {len(recorded)} unit(s) recorded")
        for run in runs:
            print("  " + unit_status(run, run.name in recorded))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("start", help="start niced one-thread workers on the studies' missing units")
    s.add_argument("--workers", type=int, default=2, help="processes (default 2, one per core)")
    s.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    s.add_argument("--data-root", type=Path, default=None, help="where the studies' data lies")
    s.add_argument("--trees", type=Path, default=Path("/tmp/study-trees"), help="clean worktrees (by commit)")
    s.add_argument("--logs", type=Path, default=Path("/tmp/study-logs"), help="one log per worker")
    p = sub.add_parser("park", help="park the unfinished units and rewrite the reports, ready to commit")
    t = sub.add_parser("status", help="each run folder's unit: epochs done, training now or not, time left")
    for q in (s, p, t):
        q.add_argument("studies", nargs="+", help="study names, in the order a worker takes them")
        q.add_argument("--work", type=Path, default=Path("/tmp/study-runs"), help="run folders (by study)")
    args = parser.parse_args(argv)
    return {"start": start, "park": park, "status": status}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
