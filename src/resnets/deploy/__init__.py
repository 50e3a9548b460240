"""The deploy path: BN folding, inference precision and layout, and export to ONNX and pt2 (torch.export)."""

from .export import FORMATS, export_model, load_exported
from .fuse import fuse_bn
from .prepare import PRECISIONS, prepare_for_inference
from .runtimes import RUNTIMES

__all__ = [
    "FORMATS",
    "PRECISIONS",
    "RUNTIMES",
    "export_model",
    "fuse_bn",
    "load_exported",
    "prepare_for_inference",
]
