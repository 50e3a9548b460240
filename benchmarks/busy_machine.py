"""Training next to other work: seconds for a fixed number of training steps of cifar_resnet20 (batch 128,
28 px, fp32 channels_last) on an idle machine and beside 1 and 2 busy processes (each a single-threaded
Python loop), for each thread setting. Each setting runs in its own process, because OpenMP reads its wait
policy once, when it loads.

python benchmarks/busy_machine.py [--steps 30] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from resnets.provenance import invocation, provenance

SETTINGS = {  # name -> environment for the measured process ("auto": resnets picks the thread count)
    "2 threads, OpenMP default": {"OMP_NUM_THREADS": "2"},
    "2 threads, PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "resnets default": {"RESNETS_BENCH_AUTO": "1"},
}
WORK = """
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
for _ in range(STEPS):
    step()
print(time.perf_counter() - start, torch.get_num_threads())
"""


def measure(setting: dict[str, str], steps: int) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")} | setting
    out = subprocess.run([sys.executable, "-c", WORK.replace("STEPS", str(steps))], env=env,
                         capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    return float(out[0]), int(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = []
    for busy in (0, 1, 2):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        time.sleep(1.0)
        try:
            runs: dict[str, list[tuple[float, int]]] = {name: [] for name in SETTINGS}
            for _ in range(args.repeats):  # interleaved
                for name, setting in SETTINGS.items():
                    runs[name].append(measure(setting, args.steps))
        finally:
            for hog in hogs:
                hog.kill()
        for name, values in runs.items():
            seconds = statistics.median(v[0] for v in values)
            row = {"busy": busy, "setting": name, "seconds": seconds, "threads": values[0][1]}
            results.append(row)
            print(f"busy {busy}  {name:<28} {seconds:7.2f} s  ({values[0][1]} threads)", flush=True)
    idle = min(r["seconds"] for r in results if r["busy"] == 0)
    print("\nslow-down against the fastest setting on the idle machine")
    for r in results:
        r["slowdown"] = r["seconds"] / idle
        print(f"busy {r['busy']}  {r['setting']:<28} {r['slowdown']:5.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"provenance": provenance(invocation(), torch.device("cpu")), "rows": results}, f, indent=1
            )


if __name__ == "__main__":
    main()
