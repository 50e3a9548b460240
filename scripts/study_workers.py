"""Keep a session's CPU busy with study units, and hand their progress on before the machine goes.

    python scripts/study_workers.py start figure6 --data-root ../shared/data/cifar10    # two workers
    ...                                                                                  # other work
    python scripts/study_workers.py park figure6       # before the session ends; then commit docs/experiments

`start` checks out HEAD into a clean worktree (units name a clean commit) and starts `--workers` niced
processes, one torch thread each (two such workers beat one two-thread run on the 2-core AMD EPYC: see
docs/experiments/README.md), each running `resnets study` for every study named, in turn: a worker resumes a
parked unit first, then takes the next missing one that no other worker holds. `park` copies every unfinished
unit's checkpoint into the study's `parked/` folder and rewrites the reports, ready to commit.
"""

from __future__ import annotations

import argparse
import os
import shlex
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
    for q in (s, p):
        q.add_argument("studies", nargs="+", help="study names, in the order a worker takes them")
        q.add_argument("--work", type=Path, default=Path("/tmp/study-runs"), help="run folders (by study)")
    args = parser.parse_args(argv)
    return start(args) if args.step == "start" else park(args)


if __name__ == "__main__":
    sys.exit(main())
