"""scripts/time_to_accuracy.py's report: one row per seed with the machine's reference speed before it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import time_to_accuracy  # noqa: E402 (a script, importable once scripts/ is on the path)


def seed_run(seed: int, acc: float, **extra: object) -> dict:
    runtime = {"precision": "bf16", "channels_last": True, "cpu_threads": 2}
    return {"seed": seed, "wall_s": 540.0, "test_acc": acc, "load_before": (0.5, 0.4, 0.3), "best_epoch": 13,
            "epochs": 13, "curve_split": "test", "runtime": runtime, "curve": [], **extra}  # fmt: skip


def test_report_rows_carry_the_reference_speed_measured_before_each_seed() -> None:
    assert time_to_accuracy.reference_gflops() > 1  # a real 1024² fp32 matmul on this machine
    args = argparse.Namespace(preset="fast", target=94.0, minutes=10.0, candidates=[])
    source = {"command": "x", "commit": "abc", "dirty": False, "machine": {"cpu": "CPU", "cores": 2}}
    runs = [seed_run(0, 0.9390, reference_gflops=612.4), seed_run(1, 0.9410)]  # seed 1: an older study's row
    text = time_to_accuracy.report(runs, args, source)
    assert "| 0 | 93.90% | 9.0 | bf16, channels_last | 2 | 0.50 | 612 |" in text
    assert "| 1 | 94.10% | 9.0 | bf16, channels_last | 2 | 0.50 | - |" in text
    assert "94.00 ± 0.14%" in text and "target met" in text
