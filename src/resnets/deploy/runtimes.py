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
import warnings
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
Opener = Callable[..., Session]  # (ONNX file, threads[, spinning=]) -> session
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


def onnx_path(model: nn.Module, input_size: tuple[int, ...]) -> Path:
    """Where the cache keeps `model`'s ONNX export for images of `input_size` (C, H, W)."""
    return cache_dir() / "onnx" / f"{model_digest(model, input_size)}.onnx"


def onnx_file(model: nn.Module, input_size: tuple[int, ...]) -> Path:
    """`model` exported to ONNX (free batch size) for images of `input_size` (C, H, W), cached on disk."""
    path = onnx_path(model, input_size)
    cache_export(model, input_size, path)
    return path


def cache_export(model: nn.Module, input_size: tuple[int, ...], path: Path) -> bool:
    """Make sure the cache holds `model`'s export at `path` (its `onnx_path`); True if it was there already.
    The export is written atomically, so a killed one leaves no half file at `path`."""
    if path.is_file():
        path.touch()  # recently used: kept by the pruning below
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    export_model(model, path, "onnx", input_size)
    by_use = sorted(path.parent.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in by_use[KEEP_EXPORTS:]:
        old.unlink(missing_ok=True)
    return False


def onnxruntime_session(path: Path, threads: int, spinning: bool = True) -> Session:
    """ONNX Runtime's CPU session for the ONNX file `path`, on `threads` intra-op threads that spin-wait
    for work between ops only if `spinning`: on cores other processes use, spinning threads take their
    time slices from the work they wait for (0.34x its idle speed beside one busy process)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # as many as PyTorch uses, not ORT's default of every core
    options.inter_op_num_threads = 1
    for pool in ("intra_op", "inter_op"):  # ONNX Runtime's session config keys; "1" (spin) is its default
        options.add_session_config_entry(f"session.{pool}.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(["logits"], {"images": x})[0]


class PeerRuntime(nn.Module):
    """`model` served by a peer runtime (ONNX Runtime unless `opener` says otherwise): takes and returns
    torch tensors like the module it stands for.

    The ONNX export fixes the image size, so a session is opened (from the disk cache when it is there) at
    the first call of each size; the batch size stays free. Sessions run on `threads` (None: as many as
    PyTorch at that call); `spinning` (None: the opener's default) is passed to the opener when set. A cached
    export that fails to load (truncated, overwritten) is deleted and exported again, once."""

    def __init__(
        self,
        model: nn.Module,
        opener: Opener = onnxruntime_session,
        threads: int | None = None,
        spinning: bool | None = None,
    ) -> None:
        super().__init__()
        self.model = model.eval()
        self.opener = opener
        self.threads = threads
        self.spinning = spinning
        self._sessions: dict[tuple[int, ...], Session] = {}

    def _open(self, path: Path) -> Session:
        threads = self.threads or torch.get_num_threads()
        if self.spinning is None:
            return self.opener(path, threads)
        return self.opener(path, threads, spinning=self.spinning)

    def _session(self, size: tuple[int, ...]) -> Session:
        """The session for images of `size`: from the cached export, else (missing or damaged) a new one."""
        path = onnx_path(self.model, size)
        cached = cache_export(self.model, size, path)
        try:
            return self._open(path)
        except Exception as first:  # ONNX Runtime's load errors have no common class below Exception
            if not cached:
                raise unloadable(path, first) from first
            warnings.warn(
                f"{path}: a damaged ONNX export in the cache ({first}); exporting it again", stacklevel=2
            )
            path.unlink(missing_ok=True)  # left there, it would fail every later call
        cache_export(self.model, size, path)
        try:
            return self._open(path)
        except Exception as e:
            raise unloadable(path, e) from e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[1:])
        if size not in self._sessions:
            self._sessions[size] = self._session(size)
        return torch.from_numpy(self._sessions[size](x.detach().float().contiguous().numpy()))


def unloadable(path: Path, error: Exception) -> RuntimeError:
    """The error for an export that fails to load although it was just made from the weights: what to do
    first (the CLI cuts long messages), then the runtime's own words."""
    return RuntimeError(
        f"ONNX Runtime cannot load {path}, this model's export made just now from its weights: serve it with "
        f"runtime='compiled' (resnets predict --runtime compiled), or delete {path} and check that torch "
        f"and onnxruntime are installed intact ({type(error).__name__}: {error})"
    )
