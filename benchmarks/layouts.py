"""Inference images/s of the deploy path in each precision and memory layout: the measurement behind
`prepare_for_inference`'s channels_last default.

    python benchmarks/layouts.py --threads 1
"""

from __future__ import annotations

import argparse

import torch

from resnets.bench.config import BenchConfig, Context
from resnets.deploy import prepare_for_inference
from resnets.models import create_model

CASES = (("cifar_resnet20", 32, 32), ("cifar_resnet56", 32, 32), ("cifar_resnet20", 32, 1), ("resnet18", 224, 8),
         ("resnet18", 224, 1), ("resnet50", 224, 8))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = Context(BenchConfig(repeats=5, warmup=2), torch.device("cpu"))
    print(
        f"{'model':<16}{'batch':>6}"
        + "".join(f"{p + '-' + lay:>12}" for p in ("fp32", "bf16") for lay in ("nchw", "nhwc"))
    )
    for name, side, batch in CASES:
        model = create_model(name).eval()
        x = torch.randn(batch, 3, side, side)
        rates = []
        for precision in ("fp32", "bf16"):
            for channels_last in (False, True):
                run = prepare_for_inference(model, dtype=precision, channels_last=channels_last)
                with torch.inference_mode():
                    rates.append(batch / ctx.time(lambda run=run, x=x: run(x)))
        print(f"{name:<16}{batch:>6}" + "".join(f"{r:>12.1f}" for r in rates), flush=True)


if __name__ == "__main__":
    main()
