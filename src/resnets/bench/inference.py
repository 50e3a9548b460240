"""Inference throughput (a full batch) and latency (batch 1): eager ours and torchvision's, our deploy path in
fp32 and bf16, and ONNX Runtime on the same network exported to ONNX."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from ..deploy import export_model, load_exported, prepare_for_inference
from ..machine import bf16_native
from .config import Context
from .models import input_side, macs_per_image, ours, torchvision_twin

Runner = Callable[[torch.Tensor], torch.Tensor]


def _candidates(ctx: Context, name: str, side: int, workdir: Path) -> list[tuple[str, str, Runner]]:
    """(impl, precision, callable) for each way of running `name` on this device."""
    device = ctx.device
    model = ours(name).to(device).eval()
    found: list[tuple[str, str, Runner]] = [("ours-eager", "fp32", model)]
    twin = torchvision_twin(name)
    if twin is not None:
        found.append(("torchvision-eager", "fp32", twin.to(device).eval()))
    found.append(("ours-deploy", "fp32", prepare_for_inference(model, dtype="fp32")))
    if bf16_native(device):
        found.append(("ours-deploy", "bf16", prepare_for_inference(model, dtype="bf16")))
    if ctx.config.onnx and device.type == "cpu":
        path = export_model(model, workdir / f"{name}.onnx", "onnx", (3, side, side))
        found.append(("onnxruntime", "fp32", load_exported(path)))
    return found


def inference_rows(ctx: Context) -> list[dict]:
    """One row per model, implementation and batch size (the throughput batch, then 1 for latency)."""
    c = ctx.config
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in c.models + c.cifar_models:
            side = input_side(name, c.image_size)
            macs = macs_per_image(name, side)
            candidates = _candidates(ctx, name, side, Path(workdir))
            for batch in (c.batch_size, 1):
                x = torch.randn(batch, 3, side, side, device=ctx.device)
                with torch.inference_mode():  # all ways of running it, timed interleaved
                    times = ctx.time_each([lambda run=run, x=x: run(x) for _, _, run in candidates])
                for (impl, precision, _), seconds in zip(candidates, times, strict=True):
                    rows.append(
                        {
                            "model": name,
                            "impl": impl,
                            "precision": precision,
                            "batch_size": batch,
                            "image_size": side,
                            "images_per_s": batch / seconds,
                            "latency_ms": seconds * 1e3,
                            "fraction_of_peak": ctx.fraction_of_peak(
                                macs, batch / seconds, precision, passes=1
                            ),
                        }
                    )
    return rows
