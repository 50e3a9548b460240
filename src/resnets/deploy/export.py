"""Exporting a model to ONNX or a `torch.export` archive (pt2), with a dynamic batch dimension.

TorchScript (`torch.jit.trace`/`save`/`load`) is deprecated in PyTorch 2.14 in favour of `torch.export`, so it
is not offered: pt2 is the exported program for PyTorch runtimes, ONNX for the others."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..files import atomic_write, atomic_write_bytes
from ..typecheck import checked

ExportFormat = Literal["onnx", "pt2"]
FORMATS: dict[str, str] = {"onnx": ".onnx", "pt2": ".pt2"}
DROPPED = {
    "torchscript": "TorchScript is deprecated in PyTorch 2.14; use --format pt2 (torch.export) or onnx"
}


def check_format(format: str, path: str | Path | None = None) -> None:
    """Refuse an unknown format, or an output path whose suffix is not the format's (which would also keep
    an export from landing on a weights file)."""
    if format in DROPPED:
        raise ValueError(DROPPED[format])
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if path is not None and Path(path).suffix != FORMATS[format]:
        raise ValueError(f"{path}: a {format} export must end in {FORMATS[format]}; choose another --out")


@checked
def export_model(
    model: nn.Module, path: str | Path, format: ExportFormat, input_size: tuple[int, int, int]
) -> Path:
    """Write `model` (put in eval mode) to `path` in `format`; the batch size stays free in both formats.

    ONNX uses the dynamo exporter with one self-contained file (input `images`, output `logits`); pt2 is
    `torch.export.save` of an `ExportedProgram`. The file is written atomically: a failure (a full disk
    included) raises and leaves any earlier file at `path` as it was."""
    check_format(format, path)
    if len(input_size) != 3 or min(input_size) < 1:
        raise ValueError(f"input size is C H W with each >= 1, got {' '.join(map(str, input_size))}")
    model = model.eval()
    example = (torch.randn(2, *input_size),)  # batch 2: a batch of 1 would be specialised as a constant
    batch = {0: torch.export.Dim("batch", min=1)}
    with torch.no_grad():
        if format == "onnx":
            program = torch.onnx.export(model, example, dynamo=True, dynamic_shapes=(batch,),
                                        input_names=["images"], output_names=["logits"], verbose=False)  # fmt: skip
            return atomic_write(path, lambda tmp: program.save(str(tmp), external_data=False))
        buffer = io.BytesIO()  # serialised in memory, so a full disk is an OSError here, not an abort in C++
        torch.export.save(torch.export.export(model, example, dynamic_shapes=(batch,)), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_exported(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function from an fp32 batch to logits that runs an exported file: ONNX Runtime for `.onnx`,
    `torch.export.load` for `.pt2`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    raise ValueError(
        f"{path}: unknown exported format {path.suffix!r}; expected one of {list(FORMATS.values())}"
    )
