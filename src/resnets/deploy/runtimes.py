"""Which runtime serves a prepared model: PyTorch eager, PyTorch compiled (Inductor with freezing), or ONNX
Runtime fed an ONNX export of the same BN-folded model.

Why a peer: measured interleaved (docs/benchmarks.md, "Inference runtimes", an AMD EPYC; issue 13 saw the same
on an Intel Xeon), ONNX Runtime was the fastest fp32 runtime at batch 1 and 32 for resnet18/50 and
cifar_resnet20/56, or within 10% of the fastest; its lead is largest on the small CIFAR nets at batch 1
(2-2.5x Inductor's compiled graph), where PyTorch's per-op dispatch dominates.
So `runtime="auto"` serves fp32 on a CPU through ONNX Runtime when it is installed (`resnets[export]`) and
through Inductor otherwise. The export is made at the first call of each image size and cached on disk,
keyed by the weights, so a second `predict` does not pay for it again.

OpenVINO is compared in the benchmark (`PeerRuntime` takes any opener) but not offered as a serving runtime:
loaded in one process with Inductor and forked DataLoader workers it crashed our test run (a heap
corruption, seen with openvino 2026.4.1), and it was not faster than ONNX Runtime by more than 7% anywhere.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..files import cache_dir
from .export import export_model

InferenceRuntime = Literal["auto", "eager", "compiled", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("auto", "eager", "compiled", "onnxruntime")
Session = Callable[[np.ndarray], np.ndarray]  # an fp32 NCHW batch -> logits
Opener = Callable[[Path, int], Session]  # (ONNX file, threads) -> session
KEEP_EXPORTS = 8  # the cache keeps the most recently used exports (a resnet50 export is ~100 MB)


def choose_runtime(runtime: str, dtype: str, device: torch.device) -> str:
    """The concrete runtime for `runtime` ("auto" or a name), refusing combinations that cannot run."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, not {runtime!r}")
    if runtime == "onnxruntime":
        if dtype != "fp32" or device.type != "cpu":
            raise ValueError(
                "runtime 'onnxruntime' serves fp32 on the CPU; use runtime='compiled' or 'eager'"
            )
        if importlib.util.find_spec("onnxruntime") is None:
            raise ImportError("runtime 'onnxruntime' is not installed: pip install 'resnets[export]'")
        return runtime
    if runtime != "auto":
        return runtime
    if device.type != "cpu" or dtype != "fp32":
        return "eager"
    return "onnxruntime" if importlib.util.find_spec("onnxruntime") else "compiled"


def model_digest(model: nn.Module, input_size: tuple[int, ...]) -> str:
    """A key for `model`'s graph and weights at one input size, and the torch that exports it."""
    h = hashlib.sha256(f"{model}|{input_size}|{torch.__version__}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def onnx_file(model: nn.Module, input_size: tuple[int, ...]) -> Path:
    """`model` exported to ONNX (free batch size) for images of `input_size` (C, H, W), cached on disk."""
    path = cache_dir() / "onnx" / f"{model_digest(model, input_size)}.onnx"
    if path.is_file():
        path.touch()  # recently used: kept by the pruning below
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    export_model(model, path, "onnx", input_size)
    by_use = sorted(path.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in by_use[KEEP_EXPORTS:]:
        old.unlink(missing_ok=True)
    return path


def onnxruntime_session(path: Path, threads: int) -> Session:
    """ONNX Runtime's CPU session for the ONNX file `path`, on `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # as many as PyTorch uses, not ORT's default of every core
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"images": x})[0]


class PeerRuntime(nn.Module):
    """`model` served by a peer runtime (ONNX Runtime unless `opener` says otherwise): takes and returns
    torch tensors like the module it stands for.

    The ONNX export fixes the image size, so a session is opened (from the disk cache when it is there) at
    the first call of each size; the batch size stays free."""

    def __init__(self, model: nn.Module, opener: Opener = onnxruntime_session) -> None:
        super().__init__()
        self.model = model.eval()
        self.opener = opener
        self._sessions: dict[tuple[int, ...], Session] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[1:])
        if size not in self._sessions:
            path = onnx_file(self.model, size)
            self._sessions[size] = self.opener(path, torch.get_num_threads())
        return torch.from_numpy(self._sessions[size](x.detach().float().contiguous().numpy()))
