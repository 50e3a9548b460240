"""Exporting a model to ONNX, TorchScript or a `torch.export` archive, with a dynamic batch dimension."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

ExportFormat = Literal["onnx", "torchscript", "pt2"]
FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}


def export_model(
    model: nn.Module, path: str | Path, format: ExportFormat, input_size: tuple[int, int, int]
) -> Path:
    """Write `model` (put in eval mode) to `path` in `format`; the batch size stays free in every format.

    ONNX uses the dynamo exporter with one self-contained file (input `images`, output `logits`);
    TorchScript is traced; pt2 is `torch.export.save` of an `ExportedProgram`.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = (torch.randn(2, *input_size),)  # batch 2: a batch of 1 would be specialised as a constant
    batch = {0: torch.export.Dim("batch", min=1)}
    with torch.no_grad():
        if format == "onnx":
            torch.onnx.export(
                model,
                example,
                str(path),
                dynamo=True,
                dynamic_shapes=(batch,),
                input_names=["images"],
                output_names=["logits"],
                external_data=False,
                verbose=False,
            )
        elif format == "torchscript":
            torch.jit.save(torch.jit.trace(model, example), str(path))
        else:
            torch.export.save(torch.export.export(model, example, dynamic_shapes=(batch,)), str(path))
    return path


def load_exported(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from an fp32 batch to logits that runs an exported file: ONNX Runtime for `.onnx`,
    `torch.jit.load` for `.ts`, `torch.export.load` for `.pt2`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    if path.suffix == ".ts":
        return torch.jit.load(str(path))
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    raise ValueError(
        f"{path}: unknown exported format {path.suffix!r}; expected one of {list(FORMATS.values())}"
    )
