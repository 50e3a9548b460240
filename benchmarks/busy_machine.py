"""Next to other work: how training and the serving runtime slow down beside busy processes (each a
single-threaded Python loop), for each thread and wait setting.

Training: seconds for a fixed number of training steps of cifar_resnet20 (batch 128, 28 px, fp32
channels_last) on an idle machine and beside 1 and 2 busy processes. Serving: seconds per batch of 32 for
cifar_resnet20 (32 px) served by `prepare_for_inference`'s default (ONNX Runtime) on an idle machine and
beside 1 busy process, with its threads spin-waiting between ops or not. Each setting runs in its own
process (OpenMP reads its wait policy once, when it loads; a spinning session's threads would disturb the
next measurement), repeats are interleaved and each number is their median.

python benchmarks/busy_machine.py [--only training|serving] [--steps 30] [--batches 50] [--repeats 3]
python benchmarks/busy_machine.py --quick   # a few steps and batches, once: checks it runs, no numbers
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from resnets.machine import core_count, cpu_model, describe, load_average
from resnets.provenance import invocation, provenance

TRAINING = {  # name -> environment for the measured process ("auto": resnets picks the thread count)
    "2 threads, OpenMP default": {"OMP_NUM_THREADS": "2"},
    "2 threads, PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "resnets default": {"RESNETS_BENCH_AUTO": "1"},
}
TRAIN = """
import os, time, torch
from resnets import create_model
from resnets.machine import set_threads
if os.environ.get("RESNETS_BENCH_AUTO"):
    set_threads()
model = create_model("cifar_resnet20", in_channels=1).to(memory_format=torch.channels_last)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 10, (128,))
def step():
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
for _ in range(3):
    step()
start = time.perf_counter()
for _ in range(COUNT):
    step()
print(time.perf_counter() - start, torch.get_num_threads(), "-")
"""
SERVING = {  # name -> (threads: None = prepare_for_inference's choice, spinning: None = its choice)
    "resnets default": (None, None),
    "all cores, spinning": (core_count(), True),
    "all cores, no spinning": (core_count(), False),
}
SERVE = """
import time, torch
from resnets import create_model
from resnets.deploy import prepare_for_inference
torch.manual_seed(0)  # the same weights in every process: one ONNX export, cached
served = prepare_for_inference(create_model("cifar_resnet20").eval(), threads=THREADS)
if SPINNING is not None:
    served.spinning = SPINNING  # (sessions open at the first call)
x = torch.randn(32, 3, 32, 32)
with torch.no_grad():
    for _ in range(3):
        served(x)
    start = time.perf_counter()
    for _ in range(COUNT):
        served(x)
print((time.perf_counter() - start) / COUNT, served.threads, "on" if served.spinning else "off")
"""


def measure(code: str, env: dict[str, str]) -> tuple[float, int, str]:
    """(seconds, threads, spinning) printed by `code` run in a fresh process with `env` added, without the
    caller's OpenMP settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")} | env
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seconds, threads, spinning = out.stdout.split()[-3:]
    return float(seconds), int(threads), spinning


def beside(busy: int, runs: dict[str, tuple[str, dict[str, str]]], repeats: int) -> dict[str, list]:
    """Each of `runs` (name -> code, environment) `repeats` times, interleaved, beside `busy` busy processes."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    time.sleep(1.0)
    try:
        results: dict[str, list] = {name: [] for name in runs}
        for _ in range(repeats):  # interleaved
            for name, (code, env) in runs.items():
                results[name].append(measure(code, env))
        return results
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def report(part: str, busy: int, runs: dict[str, list], rows: list[dict[str, object]]) -> None:
    unit = "s" if part == "training" else "s/batch"
    for name, values in runs.items():
        seconds = statistics.median(v[0] for v in values)
        threads, spinning = values[0][1], values[0][2]
        rows.append({"part": part, "busy": busy, "setting": name, "seconds": seconds, "threads": threads,
                     "spinning": spinning})  # fmt: skip
        spin = f", spinning {spinning}" if spinning != "-" else ""
        print(
            f"{part:<8} busy {busy}  {name:<26} {seconds:9.4f} {unit}  ({threads} threads{spin})", flush=True
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("training", "serving"), default=None)
    parser.add_argument("--steps", type=int, default=30, help="training steps timed per process")
    parser.add_argument("--batches", type=int, default=50, help="serving batches timed per process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 steps or batches, once: a smoke test")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batches, args.repeats = 2, 2, 1
    parts = [args.only] if args.only else ["training", "serving"]
    if "serving" in parts and importlib.util.find_spec("onnxruntime") is None:
        sys.exit("serving is measured on ONNX Runtime: pip install 'resnets[export]' (or --only training)")
    load = ", ".join(f"{x:.2f}" for x in load_average())
    print(f"machine: {cpu_model()}, {core_count()} cores, torch {torch.__version__}, load average {load} "
          "(other jobs skew the numbers)\n", flush=True)  # fmt: skip
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as cache:  # a fresh $RESNETS_CACHE: the first process exports
        if "training" in parts:
            runs = {name: (TRAIN.replace("COUNT", str(args.steps)), env) for name, env in TRAINING.items()}
            for busy in (0, 1) if args.quick else (0, 1, 2):
                report("training", busy, beside(busy, runs, args.repeats), rows)
        if "serving" in parts:
            runs = {
                name: (
                    SERVE.replace("COUNT", str(args.batches))
                    .replace("THREADS", str(threads))
                    .replace("SPINNING", str(spinning)),
                    {"RESNETS_CACHE": cache},
                )  # fmt: skip
                for name, (threads, spinning) in SERVING.items()
            }
            for busy in (0, 1):
                report("serving", busy, beside(busy, runs, args.repeats), rows)
    print("\nslow-down against the fastest setting of its part on the idle machine")
    for part in parts:
        idle = min(r["seconds"] for r in rows if r["part"] == part and r["busy"] == 0)
        for r in (r for r in rows if r["part"] == part):
            r["slowdown"] = r["seconds"] / idle
            print(f"{part:<8} busy {r['busy']}  {r['setting']:<26} {r['slowdown']:5.2f}x")
    if args.json:
        machine = describe(torch.device("cpu")) | {"load_average": load_average()}
        with open(args.json, "w") as f:
            json.dump({"provenance": provenance(invocation(), torch.device("cpu")), "machine": machine,
                       "rows": rows}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
