"""Turning a trained model into its fastest exact-enough inference form: fused, in the chosen precision and
memory layout, served by the chosen runtime (`runtimes.py`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from ..machine import serving_threads
from ..models import ResNet
from ..typecheck import checked
from .fuse import fuse_bn
from .runtimes import InferenceRuntime, PeerRuntime, choose_runtime

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")


class CastInput(nn.Module):
    """Run a low-precision model on fp32 inputs and return fp32 logits, so callers need not change."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


class FrozenCompiled(nn.Module):
    """A graph compiled by Inductor with freezing (weights folded into constants), run without autograd.

    The int8 graph needs freezing: it is what prepacks the int8 weights for oneDNN and fuses each
    dequantize -> conv -> (add) -> (ReLU) -> quantize chain into one int8 kernel. The switch is Inductor's
    global config, so it is set only around each call (compilation happens inside the first call of each
    input shape); as a `torch.compile` option it comes too late, leaving the weights graph inputs.
    `dynamic=False` compiles each batch size on its own (a graph specialised to batch 1 runs faster than a
    dynamic one there); Inductor's on-disk cache makes a later process's compile of the same graph quicker.
    """

    def __init__(self, graph: nn.Module, dynamic: bool | None = None) -> None:
        super().__init__()
        self.compiled = torch.compile(graph, dynamic=dynamic)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            return self.compiled(x)


def quantize_int8(model: ResNet, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """Static int8 through torchao's PT2E flow: BN folded, `torch.export`ed with a free batch size,
    annotated by the x86 Inductor quantizer, observers calibrated on `calibration`, then converted.

    The result is fp32 ops between quantize/dequantize pairs, about 2x slower than fp32 as it is; it is
    fast only once Inductor compiles it into int8 kernels (`FrozenCompiled`). Export is strict: non-strict
    export puts every call of a reused module (a block's one ReLU) into one source partition, which the
    quantizer's fusion patterns reject.
    """
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    except ImportError as e:
        raise ImportError("dtype='int8' needs torchao: pip install 'resnets[int8]'") from e

    batches = list(calibration)
    if not batches:
        raise ValueError("int8 needs at least one calibration batch")
    example = (torch.cat([batches[0][:1]] * 2),)  # batch 2: a batch of 1 would be specialised as a constant
    batch = {0: torch.export.Dim("batch", min=1)}
    graph = torch.export.export(fuse_bn(model), example, dynamic_shapes=(batch,), strict=True).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return convert_pt2e(prepared)


def torch_threads(requested: int | None) -> None:
    """Give PyTorch (one thread pool per process) the count the serving policy chooses."""
    threads = serving_threads(requested).threads if requested is None else requested
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


@checked
def prepare_for_inference(
    model: ResNet,
    *,
    dtype: Precision = "fp32",
    channels_last: bool | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
    runtime: InferenceRuntime = "auto",
    threads: int | None = None,
) -> nn.Module:
    """An eval-mode, BN-fused copy of `model` in `dtype` ("fp32", "bf16" or "int8") and memory layout, served
    by `runtime`: "eager" (PyTorch), "compiled" (Inductor with freezing, each batch size compiled at its first
    call), "onnxruntime" (fp32 on a CPU: an ONNX export, cached on disk, run by ONNX Runtime),
    or "auto": ONNX Runtime for fp32 on a CPU when it is installed, else "compiled"; "eager" elsewhere
    (docs/benchmarks.md, "Inference runtimes", has the measurements behind this).

    `channels_last` applies to the PyTorch runtimes; ONNX Runtime picks its own layout.
    `channels_last=None` means NHWC for fp32 and bf16, which measured faster for inference on CPU at every
    model, batch size and precision tried (docs/benchmarks.md) and is the usual choice on CUDA. bf16 casts
    the weights and wraps the model so it still takes and returns fp32. int8 (CPU only, needs torchao) is
    static quantisation calibrated on `calibration` (a few representative fp32 input batches), compiled by
    Inductor, which also picks its layout. Its first calls compile (the first batch size, then batch 1 and
    any other: tens of seconds each on a 2-core CPU); after that it ran 1.4-1.9x faster than the fastest of
    fp32 and bf16, eager or compiled, at the same top-1 (docs/benchmarks.md).

    On a CPU the model computes on `threads` threads; None applies the one thread policy that `resnets
    predict` uses (`machine.serving_threads`): the cores other processes leave idle ($OMP_NUM_THREADS, or a
    count `machine.set_threads` applied, overrides it), never more than PyTorch's own count. ONNX Runtime's
    sessions get that many threads, which do not spin-wait when other processes keep some cores busy;
    PyTorch's count is one per process, so for the PyTorch runtimes it is set (`torch.set_num_threads`).
    """
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {PRECISIONS}, not {dtype!r}")
    device = next(model.parameters()).device
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    if dtype == "int8":
        if runtime != "auto":
            raise ValueError("dtype='int8' is always served compiled by Inductor; leave runtime unset")
        if calibration is None:
            raise ValueError("dtype='int8' needs calibration batches")
        if channels_last is not None:
            raise ValueError("dtype='int8' gets its layout from Inductor; leave channels_last unset")
        if device.type != "cpu":
            raise ValueError("dtype='int8' runs on CPU only (x86 oneDNN kernels); move the model to CPU")
        torch_threads(threads)
        return FrozenCompiled(quantize_int8(model, calibration))
    runtime = choose_runtime(runtime, dtype, device)
    fused = fuse_bn(model)
    if runtime == "onnxruntime":  # (ONNX Runtime picks its own layout)
        choice = serving_threads(threads)  # spinning only where no other process waits for these cores
        spinning = not choice.shared and choice.threads <= choice.cores
        return PeerRuntime(fused, threads=choice.threads, spinning=spinning)
    if device.type == "cpu":
        torch_threads(threads)
    if channels_last is not False:
        fused = fused.to(memory_format=torch.channels_last)
    if dtype == "bf16":
        fused = CastInput(fused.to(torch.bfloat16), torch.bfloat16)
    return FrozenCompiled(fused, dynamic=False) if runtime == "compiled" else fused
