"""int8 (torchao PT2E, x86 Inductor quantizer) against the fp32 and bf16 deploy paths: speed and accuracy.

Speed: each model and batch size runs every variant interleaved in one process, medians of `--repeats`
rounds: `prepare_for_inference` in fp32, bf16 (eager) and int8 (compiled by Inductor with freezing), int8's
graph uncompiled, and fp32 and bf16 compiled by Inductor with freezing. Accuracy:
top-1 on the full test split of the data set a trained model (`--weights`, a run folder or weights file)
was trained on, int8 calibrated on `--calibration` training images.

    python benchmarks/int8.py --weights runs/<run> [--data-root DIR] [--threads 1]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable

import torch
import torchao

from resnets.data.load import load_dataset
from resnets.deploy import prepare_for_inference
from resnets.deploy.prepare import quantize_int8
from resnets.machine import cpu_model
from resnets.models import create_model
from resnets.timing import median_seconds_each
from resnets.trained import load_trained

SPEED = [("resnet18", 32, 224), ("resnet18", 1, 224), ("cifar_resnet20", 128, 32)]  # model, batch, side
Runner = Callable[[torch.Tensor], torch.Tensor]


def variants(model: torch.nn.Module, calibration: list[torch.Tensor], compiled: bool) -> dict[str, Runner]:
    """The ways to run `model`: the deploy path in fp32, bf16 and int8 (compiled by Inductor), int8's graph
    before compilation, and, if `compiled`, fp32 and bf16 compiled by Inductor too."""
    found: dict[str, Runner] = {
        "fp32": prepare_for_inference(model, dtype="fp32"),
        "bf16": prepare_for_inference(model, dtype="bf16"),
        "int8": prepare_for_inference(model, dtype="int8", calibration=calibration),
        "int8 eager": quantize_int8(model, calibration),
    }
    if compiled:
        for name in ("fp32", "bf16"):
            found[f"{name} compiled"] = torch.compile(found[name], dynamic=False)
    return found


def speed_rows(args: argparse.Namespace) -> list[dict]:
    """Median seconds per batch of every variant, per model and batch size, timed interleaved."""
    rows = []
    for name, batch, side in SPEED:
        g = torch.Generator().manual_seed(0)
        model = create_model(name).eval()
        calibration = [torch.randn(batch, 3, side, side, generator=g) for _ in range(2)]
        runners = variants(model, calibration, args.compile)
        x = torch.randn(batch, 3, side, side, generator=g)
        start = time.perf_counter()
        with torch.inference_mode():
            for run in runners.values():  # compile outside the timed warm-up
                run(x)
        compile_s = time.perf_counter() - start
        with torch.inference_mode():
            times = median_seconds_each(
                [lambda run=run, x=x: run(x) for run in runners.values()],
                torch.device("cpu"),
                warmup=2,
                repeats=args.repeats,
                min_time=args.min_time,
            )
        best = min(t for v, t in zip(runners, times, strict=True) if not v.startswith("int8"))
        for variant, seconds in zip(runners, times, strict=True):
            rows.append({"model": name, "batch": batch, "side": side, "variant": variant,
                         "img_s": batch / seconds, "vs_best": best / seconds})  # fmt: skip
        print(f"# {name} batch {batch}: first calls (compiles) {compile_s:.0f} s", flush=True)
    return rows


def accuracy_rows(args: argparse.Namespace) -> list[dict]:
    """Top-1 on the test split of each variant of the trained model, int8 calibrated on training images."""
    trained = load_trained(args.weights)
    model = trained.model
    data = load_dataset(
        args.data or trained_data(args.weights), args.data_root, channels=model.in_channels, download=False
    )
    mean = torch.tensor(trained.mean).view(-1, 1, 1)
    std = torch.tensor(trained.std).view(-1, 1, 1)

    def batches(images: torch.Tensor) -> list[torch.Tensor]:
        return [(b.float() / 255 - mean) / std for b in images.split(args.batch_size)]

    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(data.train.images), generator=g)[: args.calibration]
    runners = variants(model, batches(data.train.images[pick]), args.compile)
    test_x, test_y = batches(data.test.images), data.test.labels.split(args.batch_size)
    rows = []
    with torch.inference_mode():
        for variant, run in runners.items():
            correct = sum(int((run(x).argmax(1) == y).sum()) for x, y in zip(test_x, test_y, strict=True))
            rows.append({"variant": variant, "top1": 100 * correct / len(data.test.labels)})
    return rows


def trained_data(weights: str) -> str:
    """The data set name stored with a run's weights."""
    from resnets.models.metadata import read_meta
    from resnets.trained import resolve_weights

    return read_meta(resolve_weights(weights))["data"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", help="a trained run folder or weights file, for the accuracy table")
    parser.add_argument("--data", help="data set name (default: the one stored with the weights)")
    parser.add_argument("--data-root", help="where the data set lives (default: the usual places)")
    parser.add_argument("--calibration", type=int, default=512, help="training images to calibrate int8 on")
    parser.add_argument("--batch-size", type=int, default=500, help="evaluation and calibration batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timed repeat")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="no compiled fp32/bf16")
    parser.add_argument("--no-speed", dest="speed", action="store_false", help="accuracy only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch._inductor.config.freezing = (
        True  # for fp32/bf16 compiled: as int8 gets it (oneDNN weight prepacking)
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    print(f"commit {commit.strip()}, {cpu_model()}, {args.threads} thread(s), torch {torch.__version__}, "
          f"torchao {torchao.__version__}")  # fmt: skip
    if args.weights:
        print(
            f"\nTop-1 on the test split, {args.weights}, int8 calibrated on {args.calibration} training images\n"
        )
        print("| variant | top-1 % |\n|---|---|")
        for row in accuracy_rows(args):
            print(f"| {row['variant']} | {row['top1']:.2f} |", flush=True)
    if args.speed:
        rows = speed_rows(args)
        print(
            f"\nImages/s, median of {args.repeats} interleaved rounds; x = speed / best fp32-or-bf16 variant\n"
        )
        print("| model | batch | px | variant | img/s | x |\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['batch']} | {r['side']} | {r['variant']} | {r['img_s']:.1f} | "
                  f"{r['vs_best']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
