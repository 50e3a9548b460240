"""Run `resnets benchmark` and keep its JSON under benchmarks/results/, named after the machine and date.

python benchmarks/throughput.py                 # the full default benchmark
python benchmarks/throughput.py --threads 1 --models resnet18 resnet50 --image-size 112 --batch-size 16
"""

from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path

from resnets.cli import main
from resnets.machine import cpu_model

RESULTS = Path(__file__).parent / "results"

if __name__ == "__main__":
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_model().lower()).strip("-")
    out = RESULTS / f"{slug}-{datetime.date.today():%Y%m%d}.json"
    RESULTS.mkdir(exist_ok=True)
    sys.exit(main(["benchmark", *sys.argv[1:], "--json", str(out)]))
