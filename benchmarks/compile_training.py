"""Does `torch.compile` pay for itself in CPU training? For each (model, image shape): the training step the
loop runs (`training_step`, SGD with Nesterov momentum, label smoothing 0.1) in the format the run would
pick (the fastest of fp32/bf16 x NCHW/channels_last, timed here), eager against compiled, interleaved
medians in one process; the first compiled call's seconds (compilation, with an empty Inductor cache unless
--warm-cache); and the training time from which compiling saves more than it costs.

python benchmarks/compile_training.py [--repeats 15] [--json benchmarks/results/compile-<machine>.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

if "--warm-cache" not in sys.argv:  # before torch loads: a cold compile is what a new machine pays
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")

import torch  # noqa: E402

from resnets import create_model  # noqa: E402
from resnets.machine import cpu_has_bf16  # noqa: E402
from resnets.provenance import invocation, provenance  # noqa: E402
from resnets.timing import median_seconds_each  # noqa: E402
from resnets.train.autotune import fastest_cpu_format  # noqa: E402
from resnets.train.step import training_step  # noqa: E402

CASES = [  # (model, batch shape): Fashion-MNIST and CIFAR-10 as the presets train them
    ("cifar_resnet20", (128, 1, 28, 28)),
    ("cifar_resnet20", (128, 3, 32, 32)),
    ("cifar_resnet56", (128, 3, 32, 32)),
]


def step_fn(model_name: str, shape: tuple[int, ...], amp_dtype: torch.dtype | None, channels_last: bool,
            compiled: bool):  # noqa: ANN201 (a step callable)  # fmt: skip
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(model_name, num_classes=10, in_channels=shape[1]).to(memory_format=fmt).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    net = torch.compile(model) if compiled else model
    x = torch.randn(shape).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (shape[0],))
    return lambda: training_step(net, optimizer, x, y, amp_dtype=amp_dtype, label_smoothing=0.1)


def measure(model_name: str, shape: tuple[int, ...], repeats: int) -> dict:
    precisions = [None, torch.bfloat16] if cpu_has_bf16() else [None]
    fmt, _ = fastest_cpu_format(create_model(model_name, num_classes=10, in_channels=shape[1]), shape, 10,
                                precisions, [False, True])  # fmt: skip
    eager = step_fn(model_name, shape, fmt.amp_dtype, fmt.channels_last, compiled=False)
    compiled = step_fn(model_name, shape, fmt.amp_dtype, fmt.channels_last, compiled=True)
    start = time.perf_counter()
    compiled()
    compile_s = time.perf_counter() - start
    seconds = median_seconds_each(
        [eager, compiled], torch.device("cpu"), warmup=2, repeats=repeats, min_time=0.0
    )
    eager_ips, compiled_ips = (shape[0] / s for s in seconds)
    gain = 1 - eager_ips / compiled_ips  # share of eager training time compiling saves
    return {"model": model_name, "shape": list(shape), "format": str(fmt), "eager_img_s": eager_ips,
            "compiled_img_s": compiled_ips, "speedup": compiled_ips / eager_ips, "compile_s": compile_s,
            "break_even_min": compile_s / gain / 60 if gain > 0 else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--warm-cache", action="store_true", help="keep Inductor's cache (a compile seen before)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for model_name, shape in CASES:
        row = measure(model_name, shape, args.repeats)
        rows.append(row)
        even = (f"pays after {row['break_even_min']:.1f} min of training" if row["break_even_min"] is not None
                else "never pays")  # fmt: skip
        print(f"{model_name} {tuple(shape)} {row['format']}: eager {row['eager_img_s']:.0f}, compiled "
              f"{row['compiled_img_s']:.0f} img/s ({row['speedup']:.2f}x), compile {row['compile_s']:.1f} s: "
              f"{even}", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"provenance": provenance(invocation(), torch.device("cpu")),
                       "threads": torch.get_num_threads(), "rows": rows}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
