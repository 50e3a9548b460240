"""A study's units on a lent GPU: several workers training at once, stopped at a deadline, every finished
unit and every half-trained one (parked) brought back, the latter to be resumed on the CPU or a later GPU.

A device call carries at most ~64 MiB and full CIFAR-10 packs to ~100 MiB, so the data goes over in two
calls while the machine stays warm (it keeps ignored folders between calls). Commit first: the device gets
the working tree without .git, and each unit names the commit given here.

    # here
    python scripts/pack_cifar.py ../shared/data/cifar10 gpu_data/cifar10 --train-per-class 5000 \\
        --test-per-class 1000 --chunk-mib 55                              # two chunks
    # device call 1 (carry gpu_data/cifar10/cifar10-0.npz.xz)
    PYTHONPATH=src python scripts/gpu_study.py stash gpu_data/cifar10
    # device call 2 (carry gpu_data/cifar10/cifar10-1.npz.xz)
    PYTHONPATH=src python scripts/gpu_study.py stash gpu_data/cifar10 && PYTHONPATH=src python \\
        scripts/gpu_study.py train figure6 --chunks 2 --minutes 8 --commit SHA --out $OUT
    # fastbook: Imagenette in three pack_folder.py chunks (--chunk-mib 50), stashed over three calls, then `train fastbook --chunks 3`
    # d2l's units need only Fashion-MNIST's four IDX files (30 MiB), carried in one call:
    PYTHONPATH=src python scripts/gpu_study.py train d2l --data-root gpu_data/fashion-mnist ...
    # here, after it: copy $OUT/figure6/units/*.json into docs/experiments/figure6/units/ and the folders in
    # $OUT/figure6/parked/ into docs/experiments/figure6/parked/ and commit: any worker resumes them from there.

Workers take the next unit nobody holds (the study runner's folder locks), so N workers share the missing
units. How many: `--workers auto` (the default) first measures the aggregate training throughput of N
concurrent units for N in `--probe` (1, 2, 4, 8) in one go (under a minute: every probe process loads the
data and warms up once, then the N = 1, 2, 4, 8 phases of 6 s follow each other, the processes of a phase
training the first unit's net on its real batches; evaluation is left out) and starts the smallest N within 5% of the best. CIFAR nets
leave a GPU waiting on kernel launches (docs/gpu.md), so several processes fill it better than one.
throughput.json keeps the probe's images per second and the epochs per minute the chosen N then gave.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = ("cifar10-*.npz.xz", "*.tar")  # pack_cifar.py's and pack_folder.py's


def chunk_files(folder: Path) -> list[Path]:
    return sorted(p for pattern in CHUNKS for p in folder.glob(pattern))


def stash(carried: Path, cache: Path) -> int:
    """Move this call's carried chunks into the cache, which outlives the call while the machine is warm."""
    (cache / "chunks").mkdir(parents=True, exist_ok=True)
    moved = [shutil.copy2(p, cache / "chunks" / p.name) for p in chunk_files(carried)]
    print(f"stashed {len(moved)} chunk(s); {len(chunk_files(cache / 'chunks'))} in {cache / 'chunks'}")
    return 0


def unpacked(cache: Path, chunks: int) -> Path:
    """The data set unpacked once from the stashed chunks, all `chunks` of them (a missing one is named):
    CIFAR-10 from pack_cifar.py's, a folder data set from pack_folder.py's."""
    have = chunk_files(cache / "chunks")
    if len(have) != chunks:
        raise SystemExit(
            f"{len(have)} of {chunks} chunks stashed in {cache / 'chunks'}: stash the others first"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if have[0].suffix == ".tar":
        from pack_folder import unpack as unpack_folder

        return unpack_folder(have, cache / "data")
    if not (cache / "cifar10" / "cifar-10-batches-py").is_dir():
        from pack_cifar import unpack

        unpack(cache / "chunks", cache / "cifar10")
    return cache / "cifar10"


def study_command(args: argparse.Namespace, out: Path) -> tuple[list[str], dict[str, str]]:
    """`resnets study` on this study's folders, from the source tree, naming the given commit."""
    env = os.environ | {
        "PYTHONPATH": str(ROOT / "src"),
        "RESNETS_SOURCE_COMMIT": args.commit,
        "GIT_DIR": str(out / "no-git"),
    }  # fmt: skip (the commit is the one given: see above)
    return [sys.executable, "-m", "resnets", "study", args.study, "--out", str(out), "--work",
            str(args.cache / "runs")], env  # fmt: skip


def loader_workers(device: str, units: int) -> int:
    """Data-loading processes per unit for image-folder data (Imagenette, chest X-rays): the machine's cores
    shared among the units, one left to each unit's own process; none on a CPU dry run."""
    return 0 if device == "cpu" else max(0, (os.cpu_count() or 1) // units - 1)


def pending(args: argparse.Namespace, out: Path) -> list[str]:
    """The units the workers will take, in their order (the runner's: parked ones first)."""
    from resnets.experiments.studies import STUDIES, Where
    from resnets.experiments.studies.runner import pending as runner_pending

    arms = args.arms.split(",") if args.arms else None
    done = {p.stem for p in (out / "units").glob("*.json")}
    todo = runner_pending(STUDIES[args.study], Where(out, args.cache / "runs"), done, args.seeds, arms)
    return [u.name for u in todo]


def probe(args: argparse.Namespace, data: Path, unit: str, most: int) -> dict:
    """Images per second of N concurrent processes training `unit`'s net, for each N in `--probe` up to
    `most`, and the smallest N within 5% of the best (see the module's docstring)."""
    phases = [n for n in args.probe if n <= most] or [1]
    argv = [sys.executable, __file__, "probe-worker", args.study, unit, "--data-root", str(data), "--device",
            args.device, "--seconds", str(args.probe_seconds), "--phases", ",".join(map(str, phases)),
            "--loader-workers", str(loader_workers(args.device, max(phases)))]  # fmt: skip
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    workers = [subprocess.Popen(argv + ["--index", str(i)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, cwd=ROOT) for i in range(max(phases))]  # fmt: skip
    for i, w in enumerate(workers):  # each says when its data is loaded and its net warmed up
        if w.stdout.readline().strip() != "ready":
            for other in workers:
                other.kill()
            raise SystemExit(f"probe process {i} failed (exit {w.wait()}): see its error above")
    start = time.time() + 0.5  # the same first phase for all
    counts = [json.loads(w.communicate(f"{start}\n")[0].strip().splitlines()[-1]) for w in workers]
    rates = {n: sum(c[k] for c in counts) / args.probe_seconds for k, n in enumerate(phases)}
    return {"unit": unit, "images_per_s": rates, "chosen": fewest_near_best(rates)}


def fewest_near_best(rates: dict[int, float], within: float = 0.05) -> int:
    """The fewest workers whose throughput is within `within` of the best: more processes for under 5% would
    only slow each unit (and park more of them half-trained at the deadline)."""
    best = max(rates.values())
    return min(n for n, rate in rates.items() if rate >= (1 - within) * best)


def probe_worker(args: argparse.Namespace) -> int:
    """One probe process: load the unit's data and net, warm up, then train its real batches through every
    phase that has more than `--index` processes, idle in the others; prints the images each phase trained."""
    import torch

    from resnets.data.loader import make_loader
    from resnets.experiments.studies import STUDIES, Where
    from resnets.experiments.studies.runner import unit_config, unit_named
    from resnets.train.setup import prepare
    from resnets.train.step import training_step

    study = STUDIES[args.study]
    # a CPU dry run skips the CPU's format search
    pinned = {"precision": "fp32", "channels_last": False, "compile": False} if args.device == "cpu" else {}
    place = Where(ROOT, ROOT, str(args.data_root), args.device, loader_workers=args.loader_workers)
    cfg = replace(unit_config(study, unit_named(study, args.unit), place), **pinned)
    setup = prepare(cfg)
    rt = setup.runtime

    def batches():  # noqa: ANN202 (epoch after epoch of the unit's own batches)
        for epoch in range(10**6):
            yield from make_loader(setup.bundle, "train", cfg.batch_size, train=True, augment=cfg.augment(),
                                   device=rt.device, seed=cfg.seed, epoch=epoch, rank=0, world_size=1,
                                   workers=cfg.workers, channels_last=rt.channels_last)  # fmt: skip

    feed = batches()

    def step() -> int:
        x, y = next(feed)
        training_step(setup.model, setup.optimizer, x, y, amp_dtype=rt.amp_dtype, scaler=rt.scaler)
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        return len(y)

    for _ in range(3):  # warm-up: cuDNN's autotuner, allocator, caches
        step()
    print("ready", flush=True)
    start, images = float(sys.stdin.readline()), []
    for k, n in enumerate(int(p) for p in args.phases.split(",")):
        begin, end = start + k * args.seconds, start + (k + 1) * args.seconds
        time.sleep(max(0.0, begin - time.time()))
        count = 0
        while args.index < n and time.time() < end:  # a step ending past `end` counts here (ms of seconds)
            count += step()
        images.append(count)
    print(json.dumps(images))
    return 0


def launch(args: argparse.Namespace, data: Path, out: Path) -> list[subprocess.Popen]:
    """The workers, a few seconds apart so that each finds the previous one's unit locked."""
    argv, env = study_command(args, out)
    argv += ["--data-root", str(data), "--device", args.device, "--mixed-commits", "--loader-workers",
             str(loader_workers(args.device, args.workers))]  # fmt: skip
    argv += (["--arms", args.arms] if args.arms else []) + (
        ["--seeds", str(args.seeds)] if args.seeds else []
    )
    workers = []
    for i in range(args.workers):
        log = (out / f"worker-{i}.log").open("w")
        workers.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT))
        time.sleep(args.stagger)
    return workers


def stop(workers: list[subprocess.Popen], deadline: float) -> None:
    """Wait for the workers until the deadline, then stop them (a run folder keeps its last finished epoch)."""
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
        time.sleep(1)
    for w in workers:
        if w.poll() is None:
            w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=20)
        except subprocess.TimeoutExpired:
            w.kill()


def bring_back(args: argparse.Namespace, out: Path, minutes: float) -> dict:
    """Park the unfinished units in out/parked and measure the epochs per minute the workers gave."""
    argv, env = study_command(args, out)
    subprocess.run(argv + ["--park"], env=env, cwd=ROOT, check=True)
    cache, finished = args.cache, {p.stem for p in (out / "units").glob("*.json")}
    rows = {}
    for run in sorted((cache / "runs").glob("*")):
        metrics = run / "metrics.csv"
        lines = metrics.read_text().splitlines()[1:] if metrics.is_file() else []
        seconds = [float(line.rsplit(",", 1)[1]) for line in lines]
        rows[run.name] = {"epochs": len(lines), "finished": run.name in finished,
                          "median_epoch_seconds": statistics.median(seconds) if seconds else None}  # fmt: skip
    total = sum(r["epochs"] for r in rows.values())
    return {
        "minutes": minutes,
        "epochs": total,
        "epochs_per_minute": total / max(minutes, 1e-9),
        "units": rows,
    }


def train(args: argparse.Namespace) -> int:
    start = time.monotonic()
    data = args.data_root or unpacked(args.cache, args.chunks)
    out = args.out / args.study
    recorded = args.recorded or ROOT / "docs" / "experiments" / args.study
    for kept in ("units", "parked"):
        if (recorded / kept).is_dir():
            shutil.copytree(recorded / kept, out / kept, dirs_exist_ok=True)
    for units in recorded.parent.glob("*/units"):  # other studies' records: a unit they hold is reused
        if units.parent != recorded:
            shutil.copytree(units, args.out / units.parent.name / "units", dirs_exist_ok=True)
    before = {p.name for p in (out / "units").glob("*.json")}
    deadline = start + 60 * args.minutes
    todo, probed = pending(args, out), None
    if args.workers == "auto" and todo:
        probed = probe(args, data, todo[0], len(todo))
        print(f"probe: {json.dumps(probed)}")
    args.workers = probed["chosen"] if probed else 1 if args.workers == "auto" else int(args.workers)
    stop(launch(args, data, out), deadline)
    result = bring_back(args, out, (time.monotonic() - start) / 60)
    result |= {"workers": args.workers, "device": args.device, "probe": probed, "new_units": sorted(
        p.name for p in (out / "units").glob("*.json") if p.name not in before)}  # fmt: skip
    (args.out / "throughput.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "units"}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("stash", help="keep this call's chunks for the next call")
    s.add_argument("carried", type=Path, help="the carried folder of pack_cifar.py chunks")
    t = sub.add_parser("train", help="unpack, train the study's missing units in parallel, bring them back")
    t.add_argument("study", help="a study's name (figure6, shortcuts, ...)")
    t.add_argument("--out", type=Path, required=True, help="$OUT: units, parked units, throughput.json")
    t.add_argument("--commit", required=True, help="the commit the copied tree is (git rev-parse HEAD here)")
    data = t.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--chunks", type=int, help="how many chunks pack_cifar.py or pack_folder.py made (stashed)"
    )
    data.add_argument(
        "--data-root", type=Path, help="data carried whole instead (d2l: the Fashion-MNIST files)"
    )
    t.add_argument("--workers", default="auto", help="units trained at once: a number, or auto (default: "
                   "the N that --probe finds fastest)")  # fmt: skip
    t.add_argument("--probe", type=lambda v: [int(n) for n in v.split(",")], default=[1, 2, 4, 8],
                   help="the worker counts --workers auto compares (default 1,2,4,8)")  # fmt: skip
    t.add_argument("--probe-seconds", type=float, default=6.0, help="each count's measuring time (default 6)")
    t.add_argument("--minutes", type=float, default=8.0, help="stop the workers after this long (default 8)")
    t.add_argument("--arms", default=None, help="comma-separated arms (default: all)")
    t.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the study's)")
    t.add_argument("--recorded", type=Path, default=None, help="the study's committed folder: its units are "
                   "skipped, its parked units resumed (default: docs/experiments/STUDY)")  # fmt: skip
    t.add_argument("--device", default="cuda", help="cuda (default); cpu for a dry run")
    t.add_argument("--stagger", type=float, default=5.0, help="seconds between worker starts (default 5)")
    for p in (s, t):
        p.add_argument(
            "--cache", type=Path, default=ROOT / "gpu_cache", help="kept between calls (git-ignored)"
        )
    w = sub.add_parser("probe-worker", help="(internal) one process of --workers auto's probe")
    w.add_argument("study")
    w.add_argument("unit")
    w.add_argument("--data-root", type=Path, required=True)
    w.add_argument("--device", required=True)
    w.add_argument("--seconds", type=float, required=True, help="each phase's length")
    w.add_argument("--phases", required=True, help="processes training in each phase, comma-separated")
    w.add_argument("--loader-workers", type=int, default=0)
    w.add_argument("--index", type=int, required=True, help="this process trains in phases of more processes")
    args = parser.parse_args(argv)
    steps = {"stash": lambda: stash(args.carried, args.cache), "train": lambda: train(args),
             "probe-worker": lambda: probe_worker(args)}  # fmt: skip
    return steps[args.step]()


if __name__ == "__main__":
    sys.exit(main())
