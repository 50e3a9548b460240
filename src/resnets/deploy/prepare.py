"""Turning a trained model into its fastest exact-enough inference form: fused, in the chosen precision and
memory layout."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Literal

import torch
from torch import nn

from ..models import ResNet
from .fuse import fuse_bn

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


def quantize_int8(model: ResNet, calibration: Iterable[torch.Tensor]) -> nn.Module:
    """Static int8 (x86 backend) with FX graph mode: observers calibrated on `calibration`, then converted.

    torch.ao's FX quantisation is deprecated in favour of torchao, which this project does not depend on;
    its deprecation warning is silenced here. Runs on CPU only.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    batches = list(calibration)
    if not batches:
        raise ValueError("int8 needs at least one calibration batch")
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torchao.*")
        float_model = copy.deepcopy(model).eval()
        prepared = prepare_fx(float_model, get_default_qconfig_mapping("x86"), (batches[0],))
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_fx(prepared)


def prepare_for_inference(
    model: ResNet,
    *,
    dtype: Precision = "fp32",
    channels_last: bool | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
) -> nn.Module:
    """An eval-mode, BN-fused copy of `model` in `dtype` ("fp32", "bf16" or "int8") and memory layout.

    `channels_last=None` means NHWC for fp32 and bf16, which measured faster for inference on CPU at every
    model, batch size and precision tried (docs/benchmarks.md) and is the usual choice on CUDA. bf16 casts
    the weights and wraps the model so it still takes and returns fp32. int8 is static quantisation, needs
    `calibration` (a few representative input batches) and runs NCHW on CPU.
    """
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {PRECISIONS}, not {dtype!r}")
    if dtype == "int8":
        if calibration is None:
            raise ValueError("dtype='int8' needs calibration batches")
        if channels_last:
            raise ValueError("dtype='int8' runs NCHW; leave channels_last unset")
        return quantize_int8(model, calibration)
    fused = fuse_bn(model)
    if channels_last is not False:
        fused = fused.to(memory_format=torch.channels_last)
    if dtype == "bf16":
        return CastInput(fused.to(torch.bfloat16), torch.bfloat16)
    return fused
