"""The GPU suite: correctness, throughput, time to accuracy and the experiments, in one command.

    PYTHONPATH=src python3 scripts/gpu_suite.py --out runs/gpu-suite \\
        --data-root gpu_data/fashion-mnist --cifar-root gpu_data/cifar10

Steps run in order, each under what is left of one time budget (--budget-s, default 500 s, so that with
start-up and a compile step that overruns its estimate it ends within 9 minutes on one H100); a step that
cannot fit is skipped with its reason recorded. results.json and results.md in --out are rewritten after
every step, so a run that is cut off keeps what it measured. --dry-run runs every step at toy sizes on the
CPU (the test suite runs it). Uses only APIs that torch 2.11 has.
docs/gpu.md says what to carry to the GPU machine.
"""

from __future__ import annotations

import argparse
import copy
import csv
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

import resnets
from resnets.bench.models import macs_per_image
from resnets.bench.run import matmul_gflops
from resnets.data import AugmentConfig, make_loader
from resnets.data.bundle import DataBundle, TensorSplit
from resnets.experiments import ExperimentOptions, run_experiment
from resnets.experiments.options import CIFAR_CLAIMS
from resnets.machine import describe
from resnets.timing import median_seconds_each
from resnets.train import TrainConfig, apply_preset, fit, train_one_epoch
from resnets.train.optim import make_optimizer
from resnets.train.runtime import Runtime, compile_for_training, set_cudnn_autotune
from resnets.train.step import training_step

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"


@dataclass(frozen=True)
class Sizes:
    """Everything the suite measures at, with the full run's values; DRY shrinks them for the CPU."""

    budget_s: float = 500.0
    check_models: tuple[str, ...] = ("resnet18", "resnet50", "cifar_resnet20", "preact_resnet18", "resnext50_32x4d")  # fmt: skip
    check_batch: int = 2
    check_side: int | None = None  # None: each model's default input size
    learn_epochs: int = 2  # the short Fashion-MNIST run that must learn
    learn_min_acc: float = 0.85
    limit: int | None = None  # training images of every run (None: all)
    test_limit: int | None = None
    speed_model: str = "resnet50"
    speed_side: int = 224
    train_batch: int = 128
    infer_batches: tuple[int, ...] = (256, 32, 1)
    matmul_size: int = 8192
    warmup: int = 3
    repeats: int = 5
    min_time: float = 0.2
    compile_backend: str = "inductor"
    fmnist_epochs: int = 15  # time to 94% / 95%: the `best` recipe, shortened
    d2l_epochs: int = 10
    d2l_side: int = 96
    d2l_batch: int = 128
    cifar_epochs: int = 30
    cifar_batch: int = 128  # the paper's
    run_cap_s: tuple[float, float, float] = (150.0, 90.0, 90.0)  # the longest each of the three runs may take
    experiments: tuple[str, ...] = ("degradation", "gradients", "shortcuts", "variants", "resolution")
    experiment_budget: str = "full"
    fmnist_model: str | None = None  # None: the `best` recipe's
    child_processes: bool = True  # runs in child processes that a time limit can stop
    small_batches: tuple[int, ...] = (128, 512)  # ResNet-20 at 32 px: launch-bound or not
    small_steps: int = 50
    compiled_batch_reserve_s: float = 200.0  # compile another inference batch size only with this much left
    # a step starts only with at least this many seconds left (on the H100: compiled training took 67 s,
    # compiled inference 62 s for three batch sizes; docs/gpu.md)
    min_left: tuple[tuple[str, float], ...] = (("check_models", 30), ("check_learns", 40), ("check_learns_compiled", 60), ("check_export", 20),
                                               ("matmul_peak", 10), ("small_images", 120), ("train_eager", 40), ("train_compiled", 90),
                                               ("infer_eager", 40), ("infer_compiled", 90), ("tta_fashion_mnist", 60),
                                               ("tta_d2l", 60), ("tta_cifar10", 60), ("experiment", 60))  # fmt: skip


DRY = Sizes(
    budget_s=120.0, check_models=("resnet18", "cifar_resnet20"), check_side=32, learn_epochs=1, learn_min_acc=0.0,
    limit=128, test_limit=64, cifar_batch=32, speed_model="resnet18", speed_side=32, train_batch=4, infer_batches=(4, 1),
    matmul_size=128, warmup=1, repeats=2, min_time=0.0, compile_backend="eager", fmnist_epochs=1, d2l_epochs=1,
    d2l_side=32, d2l_batch=32, cifar_epochs=1, experiments=("degradation",), experiment_budget="tiny", fmnist_model="cifar_resnet20",
    child_processes=False, compiled_batch_reserve_s=0.0, small_batches=(4,), small_steps=2,
    min_left=tuple((name, 0.0) for name, _ in Sizes.min_left),
)  # fmt: skip


class Suite:
    """Runs steps under the time budget and writes results.json and results.md after each one."""

    def __init__(self, out: Path, sizes: Sizes, device: torch.device, args: argparse.Namespace) -> None:
        self.out, self.sizes, self.device, self.skip = out, sizes, device, tuple(args.skip)
        self.deadline = time.monotonic() + sizes.budget_s
        self.result: dict = {
            "suite": "resnets gpu suite",
            "resnets": resnets.__version__,
            "commit": git_commit(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "dry_run": args.dry_run,
            "machine": describe(device),
            "sizes": asdict(sizes),
            "steps": {},
        }
        out.mkdir(parents=True, exist_ok=True)
        self.write()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, fn: Callable[[], dict]) -> None:
        """Run one step unless it was skipped by name or less than its minimum time is left; record its
        result, error or skip, and free the GPU memory it cached for the next step."""
        needs = dict(self.sizes.min_left).get(name.split(":")[0], 0.0)
        start = time.monotonic()
        if any(name.startswith(prefix) for prefix in self.skip):
            record = {"status": "skipped", "reason": "--skip"}
        elif self.left() < needs:
            record = {
                "status": "skipped",
                "reason": f"{self.left():.0f} s left, the step needs {needs:.0f} s",
            }
        else:
            try:
                record = {"status": "ok", **fn()}
            except Exception as e:  # one step's failure must not lose the others: record it and go on
                record = {
                    "status": "error",
                    "error": f"{type(e).__name__}: {e}",
                    "trace": traceback.format_exc(),
                }
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        record["seconds"] = time.monotonic() - start
        self.result["steps"][name] = record
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {record['status']} in {record['seconds']:.1f} s"
              f" ({self.left():.0f} s left)", flush=True)  # fmt: skip
        self.write()

    def write(self) -> None:
        """results.json and results.md, each replaced atomically."""
        atomic_write(self.out / "results.json", json.dumps(self.result, indent=2, default=str))
        atomic_write(self.out / "results.md", markdown(self.result))


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def git_commit() -> str | None:
    """HEAD of the source tree, or $RESNETS_COMMIT where the tree travelled without its .git (docs/gpu.md)."""
    if os.environ.get("RESNETS_COMMIT"):
        return os.environ["RESNETS_COMMIT"]
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


# ---- (a) correctness


def check_models(sizes: Sizes, device: torch.device) -> dict:
    """Forward and backward of each model on the device against the CPU, both in float64 with TF32 off:
    the largest absolute difference of the logits and of any gradient (relative to the largest gradient)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []
    for name in sizes.check_models:
        torch.manual_seed(0)
        reference = resnets.create_model(name, num_classes=10).double().train()
        model = copy.deepcopy(reference).to(device)
        side = sizes.check_side or reference.spec.default_input_size
        x = torch.randn(sizes.check_batch, 3, side, side, dtype=torch.float64)
        y = torch.randint(0, 10, (sizes.check_batch,))
        results = []
        for net, dev in ((reference, torch.device("cpu")), (model, device)):
            logits = net(x.to(dev))
            F.cross_entropy(logits, y.to(dev)).backward()
            results.append((logits.detach().cpu(), [p.grad.cpu() for p in net.parameters()]))
        (ref_logits, ref_grads), (logits, grads) = results
        grad_scale = max(g.abs().max().item() for g in ref_grads)
        rows.append({
            "model": name, "side": side, "logits_max_abs_diff": (logits - ref_logits).abs().max().item(),
            "grads_max_abs_diff": max((g - r).abs().max().item() for g, r in zip(grads, ref_grads, strict=True)),
            "largest_grad": grad_scale,
        })  # fmt: skip
        rows[-1]["grads_max_rel_diff"] = rows[-1]["grads_max_abs_diff"] / grad_scale
    worst = max(max(r["logits_max_abs_diff"], r["grads_max_rel_diff"]) for r in rows)
    return {"rows": rows, "worst": worst, "passed": worst < 1e-8, "headline": f"worst difference {worst:.2e}"}


def check_export(sizes: Sizes, device: torch.device) -> dict:
    """torch.export of an eval-mode model on the device with a free batch size, saved, loaded and run on a
    batch size it was not traced with: largest difference from eager."""
    torch.manual_seed(0)
    model = resnets.create_model(sizes.check_models[0], num_classes=10).to(device).eval()
    side = sizes.check_side or model.spec.default_input_size
    # bounded: on CUDA, torch 2.11 refused an unbounded batch (its guard keeps it <= 65535, a CUDA kernel's
    # grid limit; H100 run of 2026-11-26, docs/gpu.md)
    batch = torch.export.Dim("batch", min=1, max=65535)
    with torch.no_grad():
        program = torch.export.export(model, (torch.randn(2, 3, side, side, device=device),),
                                      dynamic_shapes=({0: batch},))  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt2"
            torch.export.save(program, str(path))
            loaded = torch.export.load(str(path)).module()
        x = torch.randn(5, 3, side, side, device=device)
        diff = (loaded(x) - model(x)).abs().max().item()
    return {"model": sizes.check_models[0], "max_abs_diff": diff, "passed": diff < 1e-3,
            "headline": f"{sizes.check_models[0]} round trip, max diff {diff:.2e}"}  # fmt: skip


# ---- training runs: in a child process each, so a time limit can stop them and their metrics survive


class TimedOut(Exception):
    """A child process was stopped at its time limit."""


def run_child(argv: list[str], timeout: float, in_process: Callable[[], object] | None) -> None:
    """`python ARGV` in a child process, stopped (raising TimedOut) at `timeout` s; a failure raises with
    the end of its stderr. With `in_process` (the dry run, where a child's start costs more than its work)
    that is called instead."""
    if in_process is not None:
        in_process()
        return
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
    }
    try:
        done = subprocess.run(
            [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=max(timeout, 1.0)
        )
    except subprocess.TimeoutExpired:
        raise TimedOut from None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")


def train_run(
    sizes: Sizes, cfg: TrainConfig, out: Path, timeout: float, thresholds: tuple[float, ...] = ()
) -> dict:
    """Train `cfg` into `out` in a child process killed at `timeout` s: the epochs it finished, its best
    accuracy, and the training time (sum of epoch times) at which the test accuracy first reached each of
    `thresholds`. Its metrics.csv is written after every epoch, so a stopped run still counts."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(cfg, out=str(out / "run"), quiet=True)
    config = out / "config.json"
    config.write_text(cfg.to_json())
    start = time.monotonic()
    in_process = None if sizes.child_processes else lambda: fit(cfg)
    try:
        run_child([__file__, "--train-config", str(config)], timeout, in_process)
        finished = True
    except TimedOut:
        finished = False
    wall = time.monotonic() - start
    epochs = read_metrics(out / "run" / "metrics.csv")
    elapsed, reached = 0.0, {}
    for row in epochs:
        elapsed += row["seconds"]
        for t in thresholds:
            if row["test_acc"] >= t and f"{t:.2f}" not in reached:
                reached[f"{t:.2f}"] = {"seconds": elapsed, "epoch": row["epoch"]}
    record = {
        "finished": finished, "epochs_done": len(epochs), "epochs_planned": cfg.epochs, "wall_seconds": wall,
        "best_acc": max((r["test_acc"] for r in epochs), default=None),
        "final_acc": epochs[-1]["test_acc"] if epochs else None,
        "train_seconds": elapsed, "reached": {f"{t:.2f}": reached.get(f"{t:.2f}") for t in thresholds},
        "config": json.loads(cfg.to_json()), "curve": [{k: r[k] for k in ("epoch", "test_acc", "seconds")} for r in epochs],
    }  # fmt: skip
    results = out / "run" / "results.json"  # the final model's test numbers, evaluated once
    if results.is_file():
        record["final_test"] = json.loads(results.read_text())["test"]
    if not finished:
        record["stopped"] = f"stopped at the time limit, {wall:.0f} s"
    return record


def read_metrics(path: Path) -> list[dict]:
    """Epoch, accuracy and seconds of each finished epoch. Runs without a validation split evaluate on test
    every epoch; runs with one (the `paper` recipe's 45k/5k) on validation, and test only at the end
    (results.json): their curve is the validation accuracy, stored under the same key."""
    if not path.is_file():
        return []
    with path.open() as f:
        return [{"epoch": float(row["epoch"]), "seconds": float(row["seconds"]),
                 "test_acc": float(row["test_acc"] or row["val_acc"])} for row in csv.DictReader(f)]  # fmt: skip


def headline_of(record: dict) -> str:
    """The final model's accuracy (nothing selected on test); the thresholds read the per-epoch curve, the
    DAWNBench convention for time to accuracy."""
    reached = ", ".join(f"{float(t):.0%} at {r['seconds']:.0f} s" if r else f"{float(t):.0%} not reached"
                        for t, r in record["reached"].items())  # fmt: skip
    final = record.get("final_test", {}).get("accuracy", record["final_acc"])
    return (f"{record['epochs_done']}/{record['epochs_planned']} epochs, final model "
            f"{'-' if final is None else f'{final:.2%}'}" + (f"; curve reached {reached}" if reached else ""))  # fmt: skip


def common(sizes: Sizes, device: torch.device) -> dict:
    return {"limit": sizes.limit, "test_limit": sizes.test_limit, "device": str(device), "workers": 0}


def check_learns(
    sizes: Sizes, device: torch.device, work: Path, data_root: str | None, left: float, compiled: bool = False
) -> dict:
    """The default model trained briefly on Fashion-MNIST must learn; `compiled`: with `--compile`, which
    on one GPU trains through CUDA graphs (CPU: not run, nothing to check there)."""
    if compiled and device.type != "cuda":
        return {"passed": None, "headline": "not a CUDA device: no CUDA graphs to check"}
    cfg = TrainConfig(model="cifar_resnet20", data="fashion-mnist", data_root=data_root, epochs=sizes.learn_epochs,
                      compile=compiled or None, **common(sizes, device))  # fmt: skip
    record = train_run(sizes, cfg, work / ("learns-compiled" if compiled else "learns"), left)
    record["passed"] = record["finished"] and (record["final_acc"] or 0) >= sizes.learn_min_acc
    record["headline"] = f"{headline_of(record)}; learns: {record['passed']}"
    return record


def tta_fashion_mnist(
    sizes: Sizes, device: torch.device, work: Path, data_root: str | None, left: float
) -> dict:
    """The `best` recipe (ResNet-56, crops 2 px, cutout 8), shortened to `fmnist_epochs`."""
    model = {"model": sizes.fmnist_model} if sizes.fmnist_model else {}
    cfg = apply_preset("best", {"data": "fashion-mnist", "data_root": data_root, "epochs": sizes.fmnist_epochs,
                                **model, **common(sizes, device)})  # fmt: skip
    record = train_run(sizes, cfg, work / "tta_fashion_mnist", left, (0.94, 0.95))
    record["headline"] = headline_of(record)
    return record


def tta_d2l(sizes: Sizes, device: torch.device, work: Path, data_root: str | None, left: float) -> dict:
    """d2l.ai's ResNet-18 chapter as the `d2l` preset: Fashion-MNIST at 96 px, 10 epochs, lr 0.01 constant,
    batch 128, plain SGD, no augmentation (the tutorial reports 0.906 test accuracy)."""
    cfg = apply_preset("d2l", {"data_root": data_root, "epochs": sizes.d2l_epochs, "image_size": sizes.d2l_side,
                               "batch_size": sizes.d2l_batch, **common(sizes, device)})  # fmt: skip
    record = train_run(sizes, cfg, work / "tta_d2l", left, (0.90, 0.92))
    record["headline"] = headline_of(record) + " (d2l reports 0.906)"
    return record


def cifar_data(cifar_root: str | None, work: Path) -> Path:
    """CIFAR-10 as `resnets` reads it, from what was carried: packed chunks (scripts/pack_cifar.py), unpacked
    once into `work`, or a folder used as is."""
    if cifar_root is None:
        raise FileNotFoundError("no --cifar-root given: pack CIFAR-10 with scripts/pack_cifar.py and pass it")
    root = Path(cifar_root)
    if not list(root.glob("cifar10-*.npz.xz")):
        return root
    if not (work / "cifar10").is_dir():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pack_cifar import unpack

        unpack(root, work / "cifar10")
    return work / "cifar10"


def tta_cifar10(sizes: Sizes, device: torch.device, work: Path, cifar_root: str | None, left: float) -> dict:
    """The paper's CIFAR ResNet-20 with its recipe (the `paper` preset), shortened, on the carried CIFAR-10."""
    root = cifar_data(cifar_root, work)
    # the paper's recipe (`paper` preset), its 64k iterations shortened to `cifar_epochs` with the LR steps at
    # the same fractions; the curve is validation accuracy (45k/5k split), the final test number results.json's
    changes = {"data_root": str(root), "epochs": sizes.cifar_epochs, "batch_size": sizes.cifar_batch}
    cfg = apply_preset("paper", changes | common(sizes, device))
    record = train_run(sizes, cfg, work / "tta_cifar10", left, (0.80, 0.90, 0.91))
    record["headline"] = headline_of(record)
    return record


def experiment(
    name: str,
    sizes: Sizes,
    device: torch.device,
    work: Path,
    roots: tuple[str | None, str | None],
    left: float,
) -> dict:
    """`resnets experiment NAME --budget full` in a child process, stopped at the time left, on the data its
    claim is about: CIFAR-10 (the carried chunks) for the paper's CIFAR claims, else Fashion-MNIST."""
    out = work / f"experiment-{name}"
    fashion, cifar = roots
    data, root = (
        ("cifar10", str(cifar_data(cifar, work))) if name in CIFAR_CLAIMS else ("fashion-mnist", fashion)
    )
    argv = ["-m", "resnets", "experiment", name, "--budget", sizes.experiment_budget, "--device", str(device),
            "--out", str(out), "--data", data] + (["--data-root", root] if root else [])  # fmt: skip
    options = ExperimentOptions(
        budget=sizes.experiment_budget, data=data, data_root=root, out=str(out), device=str(device)
    )
    start = time.monotonic()
    try:
        run_child(argv, left, None if sizes.child_processes else lambda: run_experiment(name, options))
    except TimedOut:
        return {"finished": False, "headline": f"stopped at the time limit ({left:.0f} s), no report"}
    report = out / "report.md"
    verdict = next((line for line in report.read_text().splitlines() if "erdict" in line), "")
    return {"finished": True, "wall_seconds": time.monotonic() - start, "verdict": verdict.strip(),
            "report": report.read_text()[:6000], "headline": verdict.strip()[:120]}  # fmt: skip


# ---- (b) throughput


def matmul_peak(sizes: Sizes, device: torch.device) -> dict:
    """Achieved TFLOP/s of a large bf16 (and fp32) matmul: the ceiling model throughput is measured against."""
    timing = {"warmup": sizes.warmup, "repeats": sizes.repeats, "min_time": sizes.min_time}
    peaks = {name: matmul_gflops(device, dtype, sizes.matmul_size, **timing) / 1e3
             for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}  # fmt: skip
    return {"tflops": peaks, "size": sizes.matmul_size, "headline": f"bf16 {peaks['bf16']:.1f} TFLOP/s"}


def twins(sizes: Sizes) -> list[tuple[str, torch.nn.Module]]:
    """Ours and torchvision's network of the same name, identically seeded."""
    import torchvision

    torch.manual_seed(0)
    ours = resnets.create_model(sizes.speed_model)
    torch.manual_seed(0)
    return [("ours", ours), ("torchvision", torchvision.models.get_model(sizes.speed_model, weights=None))]


def rate_rows(
    sizes: Sizes, names: list[str], batch: int, seconds: list[float], passes: int, peak: float | None
) -> list[dict]:
    macs = macs_per_image(sizes.speed_model, sizes.speed_side)
    rows = []
    for name, s in zip(names, seconds, strict=True):
        rate = batch / s
        share = None if peak is None else 2 * macs * passes * rate / (peak * 1e12)
        rows.append(
            {
                "impl": name,
                "batch": batch,
                "images_per_s": rate,
                "ms_per_batch": 1e3 * s,
                "share_of_bf16_peak": share,
            }
        )
    return rows


def train_throughput(sizes: Sizes, device: torch.device, peak: float | None, compiled: bool) -> dict:
    """Training steps (bf16 autocast, channels_last, SGD) of ours and torchvision's, timed interleaved."""
    fns, names = [], []
    for impl, model in twins(sizes):
        model = model.to(device, memory_format=torch.channels_last).train()
        net = torch.compile(model, backend=sizes.compile_backend) if compiled else model
        x = torch.randn(sizes.train_batch, 3, sizes.speed_side, sizes.speed_side, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (sizes.train_batch,), device=device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        fns.append(
            lambda net=net, opt=optimizer, x=x, y=y: training_step(net, opt, x, y, amp_dtype=torch.bfloat16)
        )
        names.append(impl + ("-compiled" if compiled else "-eager"))
    seconds = median_seconds_each(
        fns, device, warmup=sizes.warmup, repeats=sizes.repeats, min_time=sizes.min_time
    )
    rows = rate_rows(sizes, names, sizes.train_batch, seconds, 3, peak)
    return {"model": sizes.speed_model, "side": sizes.speed_side, "rows": rows,
            "headline": ", ".join(f"{r['impl']} {r['images_per_s']:.0f} img/s" for r in rows)}  # fmt: skip


def small_image_steps(
    model: torch.nn.Module,
    batch: int,
    side: int,
    device: torch.device,
    steps: int,
    read_every_step: bool,
    graphs: bool,
) -> Callable[[], None]:
    """`steps` bare training steps (bf16, channels_last, SGD) on fixed tensors; `read_every_step` reads the
    loss back after each step (`.item()`), as the training loop did before it summed on the device;
    `graphs`: `model` is compiled with CUDA graphs, whose next replay may overwrite the last outputs."""
    x = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def run() -> None:
        for _ in range(steps):
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            loss, _ = training_step(model, optimizer, x, y, amp_dtype=torch.bfloat16)
            if read_every_step:
                loss.item()

    return run


def small_image_loop(
    model: torch.nn.Module, batch: int, side: int, device: torch.device, steps: int, graphs: bool
) -> Callable[[], None]:
    """`steps` of the real training loop (`train_one_epoch`) over an in-memory loader with 4 px crops and
    flips, on random uint8 images of CIFAR's shape: data path and loop bookkeeping included; `graphs`: as
    `resnets train --compile` trains on one GPU (CUDA graphs)."""
    images = torch.randint(0, 256, (batch * steps, 3, side, side), dtype=torch.uint8)
    split = TensorSplit(images, torch.randint(0, 10, (batch * steps,)))
    bundle = DataBundle("random", [str(c) for c in range(10)], 3, (side, side), (0.5,) * 3, (0.25,) * 3,
                        split, split)  # fmt: skip
    cfg = TrainConfig(model="cifar_resnet20", batch_size=batch, quiet=True)
    runtime = Runtime(device, torch.bfloat16, channels_last=True, compile=graphs)
    optimizer = make_optimizer(model, cfg)
    model = compile_for_training(model, runtime) if graphs else model
    generator = torch.Generator(device).manual_seed(0)
    loader = make_loader(bundle, "train", batch, train=True, augment=AugmentConfig(), device=device,
                         channels_last=True)  # fmt: skip
    return lambda: train_one_epoch(model, loader, optimizer, runtime, cfg, lambda s: 1.0, 0, generator)


def small_images(sizes: Sizes, device: torch.device) -> dict:
    """ResNet-20 training at CIFAR's 32 px, where a GPU waits on the CPU's kernel launches: bare steps with
    and without a read-back after each, compiled with CUDA graphs (mode="reduce-overhead"), and the real
    loop with its data path, timed interleaved per batch size (images/s over `small_steps` steps)."""
    rows, side, steps = [], 32, sizes.small_steps
    for batch in sizes.small_batches:
        fns, names = [], []
        for impl in ("read-each-step", "no-read", "cuda-graphs-read-each-step", "cuda-graphs", "train_one_epoch",
                     "train_one_epoch-cuda-graphs"):  # fmt: skip
            graphs, read = "cuda-graphs" in impl, "read-each-step" in impl
            if graphs and device.type != "cuda":
                continue
            torch.manual_seed(0)
            model = (
                resnets.create_model("cifar_resnet20").to(device, memory_format=torch.channels_last).train()
            )
            if impl.startswith("train_one_epoch"):
                fns.append(small_image_loop(model, batch, side, device, steps, graphs))
            else:
                net = torch.compile(model, mode="reduce-overhead", dynamic=False) if graphs else model
                fns.append(small_image_steps(net, batch, side, device, steps, read, graphs))
            names.append(impl)
        seconds = median_seconds_each(fns, device, warmup=sizes.warmup, repeats=sizes.repeats, min_time=0.0)
        rows += [{"impl": n, "batch": batch, "images_per_s": batch * steps / s, "ms_per_step": 1e3 * s / steps}
                 for n, s in zip(names, seconds, strict=True)]  # fmt: skip
    head = [r for r in rows if r["batch"] == sizes.small_batches[0]]
    return {"model": "cifar_resnet20", "side": side, "steps": steps, "rows": rows,
            "headline": ", ".join(f"{r['impl']} {r['ms_per_step']:.2f} ms" for r in head)}  # fmt: skip


def graphed(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """`model(x)` captured once as a CUDA graph and replayed (no per-kernel launch cost)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):  # warm up outside the graph (cuDNN picks its algorithms here)
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        model(x)
    return graph.replay


def infer_throughput(
    sizes: Sizes, device: torch.device, peak: float | None, compiled: bool, left: Callable[[], float]
) -> dict:
    """bf16 channels_last inference at each batch size: eager and CUDA graphs (or compiled), ours and
    torchvision's interleaved; a batch size is compiled only while `compiled_batch_reserve_s` are `left`
    for the later steps."""
    models = [(impl, m.to(device, dtype=torch.bfloat16, memory_format=torch.channels_last).eval())
              for impl, m in twins(sizes)]  # fmt: skip
    rows, skipped = [], []
    for batch in sizes.infer_batches:
        if compiled and left() < sizes.compiled_batch_reserve_s:
            skipped.append(f"batch {batch}: {left():.0f} s left, under the {sizes.compiled_batch_reserve_s:.0f} s "
                           "kept for the later steps")  # fmt: skip
            continue
        x = torch.randn(batch, 3, sizes.speed_side, sizes.speed_side, device=device, dtype=torch.bfloat16)
        x = x.contiguous(memory_format=torch.channels_last)
        fns, names = [], []
        for impl, model in models:
            if compiled:
                net = torch.compile(model, backend=sizes.compile_backend, dynamic=False)
                fns.append(lambda net=net, x=x: net(x))
                names.append(f"{impl}-compiled")
                continue
            fns.append(lambda model=model, x=x: model(x))
            names.append(f"{impl}-eager")
            if device.type == "cuda":
                fns.append(graphed(model, x))
                names.append(f"{impl}-cudagraph")
        with torch.inference_mode():
            seconds = median_seconds_each(
                fns, device, warmup=sizes.warmup, repeats=sizes.repeats, min_time=sizes.min_time
            )
        rows += rate_rows(sizes, names, batch, seconds, 1, peak)
    if device.type != "cuda" and not compiled:
        skipped.append("CUDA graphs: not a CUDA device")
    best = max(rows, key=lambda r: r["images_per_s"], default=None)
    headline = "no batch size fitted" if best is None else (
        f"best {best['impl']} {best['images_per_s']:.0f} img/s at batch {best['batch']}")  # fmt: skip
    return {"model": sizes.speed_model, "side": sizes.speed_side, "rows": rows, "skipped": skipped,
            "headline": headline}  # fmt: skip


# ---- the report


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# GPU suite results", "",
        f"{m.get('gpu') or m['cpu']} (capability {m.get('capability')}), torch {m['torch']}, commit "
        f"{result['commit']}, started {result['started']}{', DRY RUN (toy sizes)' if result['dry_run'] else ''}", "",
        "| step | status | seconds | result |", "|---|---|---|---|",
    ]  # fmt: skip
    for name, r in result["steps"].items():
        text = r.get("headline") or r.get("reason") or r.get("error", "")
        lines.append(f"| {name} | {r['status']} | {r['seconds']:.1f} | {str(text).replace('|', '/')[:200]} |")
    for name, r in result["steps"].items():
        if r["status"] == "ok" and name.startswith(("train_", "infer_")):
            lines += ["", f"## {name}: {r['model']} at {r['side']} px", "",
                      "| impl | batch | img/s | ms/batch | share of bf16 peak |", "|---|---|---|---|---|"]  # fmt: skip
            for row in r["rows"]:
                share = (
                    "-" if row["share_of_bf16_peak"] is None else f"{100 * row['share_of_bf16_peak']:.1f}%"
                )
                lines.append(
                    f"| {row['impl']} | {row['batch']} | {row['images_per_s']:.1f} | {row['ms_per_batch']:.2f} | {share} |"
                )
    small = result["steps"].get("small_images", {})
    if small.get("status") == "ok":
        lines += ["", f"## small_images: {small['model']} at {small['side']} px, {small['steps']} steps", "",
                  "| impl | batch | img/s | ms/step |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['impl']} | {r['batch']} | {r['images_per_s']:.0f} | {r['ms_per_step']:.2f} |"
                  for r in small["rows"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for results.json, results.md and the runs")
    parser.add_argument("--data-root", default=None, help="folder holding Fashion-MNIST's four IDX .gz files")
    parser.add_argument(
        "--cifar-root", default=None, help="scripts/pack_cifar.py's chunks, or a CIFAR-10 folder"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the runs' files (default OUT/runs)"
    )
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU: checks every step runs")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget (default 500; dry run 120)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="STEP",
                        help="steps to skip, by name or prefix (e.g. train_compiled infer_compiled experiment)")  # fmt: skip
    parser.add_argument(
        "--train-config", type=Path, help=argparse.SUPPRESS
    )  # child process: one training run
    args = parser.parse_args(argv)
    if args.train_config is not None:
        fit(TrainConfig.load(args.train_config))
        return 0
    if args.out is None:
        parser.error("--out is required")
    sizes = DRY if args.dry_run else Sizes()
    if args.budget_s is not None:
        sizes = replace(sizes, budget_s=args.budget_s)
    if args.dry_run:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # toy sizes gain nothing from more, and the test machine is shared
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        parser.error("no CUDA GPU here: use --dry-run for the CPU smoke run")
    if device.type == "cuda":
        set_cudnn_autotune(True)  # as `resnets train` does on CUDA
    suite = Suite(args.out, sizes, device, args)
    work = args.work or args.out / "runs"
    shutil.rmtree(work, ignore_errors=True)  # the training runs of an earlier suite run in this folder
    data, cifar = args.data_root, args.cifar_root
    suite.run("check_models", lambda: check_models(sizes, device))
    suite.run("check_learns", lambda: check_learns(sizes, device, work, data, suite.left()))
    suite.run("check_learns_compiled", lambda: check_learns(sizes, device, work, data, suite.left(), True))
    suite.run("check_export", lambda: check_export(sizes, device))
    suite.run("matmul_peak", lambda: matmul_peak(sizes, device))
    peak = suite.result["steps"]["matmul_peak"].get("tflops", {}).get("bf16")
    suite.run("small_images", lambda: small_images(sizes, device))
    suite.run("train_eager", lambda: train_throughput(sizes, device, peak, compiled=False))
    suite.run("infer_eager", lambda: infer_throughput(sizes, device, peak, False, suite.left))
    suite.run("train_compiled", lambda: train_throughput(sizes, device, peak, compiled=True))
    suite.run("infer_compiled", lambda: infer_throughput(sizes, device, peak, True, suite.left))
    fmnist_cap, d2l_cap, cifar_cap = sizes.run_cap_s
    suite.run(
        "tta_fashion_mnist",
        lambda: tta_fashion_mnist(sizes, device, work, data, min(suite.left(), fmnist_cap)),
    )
    suite.run("tta_d2l", lambda: tta_d2l(sizes, device, work, data, min(suite.left(), d2l_cap)))
    suite.run("tta_cifar10", lambda: tta_cifar10(sizes, device, work, cifar, min(suite.left(), cifar_cap)))
    for name in sizes.experiments:
        suite.run(
            f"experiment:{name}",
            lambda name=name: experiment(name, sizes, device, work, (data, cifar), suite.left()),
        )
    failed = [
        n for n, r in suite.result["steps"].items() if r["status"] == "error" or r.get("passed") is False
    ]
    print(
        f"results: {args.out / 'results.json'}, {args.out / 'results.md'}"
        + (f"; failed: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
