"""Throughput benchmarks: training steps and inference, ours vs torchvision vs ONNX Runtime, against the
machine's measured matmul ceiling."""

from .config import BenchConfig
from .report import format_report
from .run import run_benchmark

__all__ = ["BenchConfig", "format_report", "run_benchmark"]
