"""Inference throughput (a full batch) and latency (batch 1): eager ours and torchvision's, and our deploy
path (`prepare_for_inference`) served by each runtime — PyTorch eager and compiled, ONNX Runtime — plus
OpenVINO on the same ONNX export as a peer, and bf16 where the device runs it natively."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..deploy import fuse_bn, prepare_for_inference
from ..deploy.runtimes import PeerRuntime, Session, choose_runtime
from ..machine import bf16_native
from .config import Context
from .models import Net, macs_per_image, net_fields, ours, torchvision_twin

Runner = Callable[[torch.Tensor], torch.Tensor]


PEERS = ("onnxruntime", "openvino")


def openvino_session(path: Path, threads: int) -> Session:
    """OpenVINO's CPU plugin on the ONNX file `path`: latency hint (faster than throughput at both batch
    sizes here), fp32 kept (no bf16 down-casting), `threads` threads."""
    import openvino as ov

    config = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads,
        "INFERENCE_PRECISION_HINT": "f32",
    }
    request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    return lambda x: np.array(request.infer({0: x})[0])  # a copy: the request reuses its output buffer


def _runtimes(ctx: Context) -> list[str]:
    """The configured runtimes that can run here (peers: installed, and on a CPU)."""

    def available(runtime: str) -> bool:
        if runtime not in PEERS:
            return True
        return ctx.device.type == "cpu" and importlib.util.find_spec(runtime) is not None

    return [r for r in ctx.config.runtimes if available(r)]


def _deploy(model: torch.nn.Module, runtime: str) -> Runner:
    if runtime == "openvino":  # a peer for comparison, not one of ours (see deploy/runtimes.py)
        return PeerRuntime(fuse_bn(model), openvino_session)
    return prepare_for_inference(model, runtime=runtime)


def _candidates(ctx: Context, net: Net) -> list[tuple[str, str, Runner]]:
    """(impl, precision, callable) for each way of running `net` on this device."""
    device = ctx.device
    model = ours(net).to(device).eval()
    found: list[tuple[str, str, Runner]] = [("ours-eager", "fp32", model)]
    twin = torchvision_twin(net)
    if twin is not None:
        found.append(("torchvision-eager", "fp32", twin.to(device).eval()))
    for runtime in _runtimes(ctx):
        impl = "openvino" if runtime == "openvino" else f"deploy-{runtime}"
        found.append((impl, "fp32", _deploy(model, runtime)))
    if bf16_native(device):
        found.append(("deploy-eager", "bf16", prepare_for_inference(model, dtype="bf16", runtime="eager")))
    return found


def inference_rows(ctx: Context, nets: Sequence[Net]) -> list[dict]:
    """One row per net, implementation and batch size (the throughput batch, then 1 for latency); the row
    of the runtime `prepare_for_inference` picks by default is marked `default`."""
    c = ctx.config
    default = f"deploy-{choose_runtime('auto', 'fp32', ctx.device)}"
    rows = []
    for net in nets:
        macs = macs_per_image(net)
        candidates = _candidates(ctx, net)
        for batch in (c.batch_size, 1):
            x = net.inputs(batch, ctx.device)
            with torch.inference_mode():  # all ways of running it, timed interleaved
                times = ctx.time_each([lambda run=run, x=x: run(x) for _, _, run in candidates])
            for (impl, precision, _), seconds in zip(candidates, times, strict=True):
                rows.append(
                    {
                        **net_fields(net),
                        "impl": impl,
                        "precision": precision,
                        "default": impl == default and precision == "fp32",
                        "batch_size": batch,
                        "images_per_s": batch / seconds,
                        "latency_ms": seconds * 1e3,
                        "gmacs_per_image": macs / 1e9,
                        "fraction_of_peak": ctx.fraction_of_peak(macs, batch / seconds, precision, passes=1),
                    }
                )
    return rows
