"""Data sets for ResNet training: loading by name, in-memory or streaming splits, and fast batch loaders."""

from resnets.data.augment import AugmentConfig, crop_flip, cutout, mixup
from resnets.data.bundle import DataBundle, Split, TensorSplit
from resnets.data.errors import DataError
from resnets.data.folder import FolderSplit
from resnets.data.load import load_dataset
from resnets.data.loader import BatchLoader, make_loader

__all__ = [
    "AugmentConfig",
    "BatchLoader",
    "DataBundle",
    "DataError",
    "FolderSplit",
    "Split",
    "TensorSplit",
    "crop_flip",
    "cutout",
    "load_dataset",
    "make_loader",
    "mixup",
]
