"""Readers turning each on-disk format into splits: IDX, CIFAR pickles, PNG folders (cached) and image folders."""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from resnets.data.bundle import TensorSplit, stratified_split
from resnets.data.errors import DataError
from resnets.data.folder import (
    Dropped,
    FolderSplit,
    UnreadableImage,
    drop_incomplete,
    read_image,
    scan_classes,
)
from resnets.data.idx import read_idx
from resnets.data.sources import FASHION_FILES, fashion_file
from resnets.files import atomic_write, cache_dir

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
_CACHE_VERSION = 2  # 2: decoded by Pillow, files kept or dropped by decoding, reasons stored


def read_fashion_mnist(folder: Path) -> tuple[TensorSplit, TensorSplit, list[str]]:
    """Read the four Fashion-MNIST IDX files into (train, test, classes), images as (N, 1, 28, 28)."""
    arrays = [read_idx(fashion_file(folder, stem)) for stem in FASHION_FILES]
    splits = []
    for images, labels in (arrays[:2], arrays[2:]):
        if images.ndim != 3 or len(images) != len(labels):
            raise DataError(
                f"Fashion-MNIST files in {folder} do not match: {images.shape} images, {len(labels)} labels"
            )
        if (
            images.dtype != np.uint8
            or labels.ndim != 1
            or (len(labels) and not 0 <= labels.min() <= labels.max() < 10)
        ):
            raise DataError(f"Fashion-MNIST files in {folder} hold non-uint8 images or labels outside 0-9")
        splits.append(
            TensorSplit(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64)))
        )
    return splits[0], splits[1], list(FASHION_CLASSES)


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for CIFAR batches that can build dicts, lists, strings and numpy arrays and nothing else.

    Data folders are parsed, never unpickled freely: a batch whose pickle names any other global (the way a
    `__reduce__` payload runs code) is refused before anything is called. The allow-list follows what
    numpy's own array pickles need, as `torch.load(weights_only=True)` does for tensors."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR batch holds only arrays")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """One CIFAR python batch, read with `_ArraysOnly`, so a tampered file cannot run code."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DataError(
            f"cannot read CIFAR batch {path}: {e}; delete the folder and download it again"
        ) from e
    if not isinstance(batch, dict):
        raise DataError(
            f"CIFAR batch {path} is not a dict of arrays; delete the folder and download it again"
        )
    return batch


def _batch_arrays(path: Path, batch: dict, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A batch's (N, 3, 32, 32) uint8 images and int64 labels, checked, so bad files fail by name."""
    data, labels = batch.get(b"data"), batch.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.size % 3072 or labels is None:
        raise DataError(f"CIFAR batch {path} lacks uint8 'data' or {label_key.decode()!r}; download it again")
    images, labels = data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels):
        raise DataError(f"CIFAR batch {path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def read_cifar_pickles(folder: Path, name: str) -> tuple[TensorSplit, TensorSplit, list[str]]:
    """Read torchvision's CIFAR-10/100 python batches into (train, test, classes), images as (N, 3, 32, 32)."""
    if name == "cifar10":
        files = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"])
        meta, label_key, names_key = "batches.meta", b"labels", b"label_names"
    else:
        files = (["train"], ["test"])
        meta, label_key, names_key = "meta", b"fine_labels", b"fine_label_names"
    names = _unpickle(folder / meta).get(names_key)
    if not isinstance(names, list) or not all(isinstance(c, bytes) for c in names):
        raise DataError(f"{folder / meta} lacks the class names {names_key.decode()!r}; download it again")
    classes = [c.decode() for c in names]
    splits = []
    for group in files:
        arrays = [_batch_arrays(folder / f, _unpickle(folder / f), label_key) for f in group]
        images = np.concatenate([a[0] for a in arrays])
        labels = np.concatenate([a[1] for a in arrays])
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(f"labels in {folder} fall outside the {len(classes)} classes; download it again")
        splits.append(TensorSplit(torch.from_numpy(images), torch.from_numpy(labels)))
    return splits[0], splits[1], classes


def _png_cache_file(root: Path) -> Path:
    """The decoded-array cache for a PNG tree, keyed by its absolute path, file count and newest mtime."""
    count, newest = 0, 0
    for split in ("train", "test"):
        for folder in sorted((root / split).iterdir()):
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    for entry in entries:
                        count += 1
                        newest = max(newest, entry.stat().st_mtime_ns)
    key = hashlib.sha256(f"{root.resolve()}|{count}|{newest}|{_CACHE_VERSION}".encode()).hexdigest()[:16]
    return cache_dir() / "decoded" / f"{root.name}-{key}.npz"


def _decode_all(paths: list[Path]) -> list[torch.Tensor | UnreadableImage]:
    """Decode RGB images with a small thread pool; an undecodable file gives its error."""

    def decode(path: Path) -> torch.Tensor | UnreadableImage:
        try:
            return read_image(path, 3)
        except UnreadableImage as e:
            return e

    with ThreadPoolExecutor(max_workers=min(4, torch.get_num_threads())) as pool:  # the threads a run chose
        return list(pool.map(decode, paths, chunksize=256))


def _decode_png_tree(root: Path, strict: bool) -> dict[str, np.ndarray]:
    """Decode a train/ + test/ tree of same-size images into uint8 arrays, noting the dropped files and why."""
    classes = list(scan_classes(root / "train"))
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes)}
    dropped: list[Dropped] = []
    for split in ("train", "test"):
        found = scan_classes(root / split)
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{root / split} has classes missing from {root / 'train'}: {', '.join(unknown)}")
        samples, skipped = drop_incomplete(
            [(p, classes.index(c)) for c, ps in found.items() for p in ps], strict
        )
        images = _decode_all([p for p, _ in samples])
        failed = [Dropped(e.path, e.reason) for e in images if isinstance(e, UnreadableImage)]
        if failed and strict:
            raise DataError(f"cannot decode image {failed[0].path} ({len(failed)} in all); fix or delete it")
        kept = [
            (image, y)
            for image, (_, y) in zip(images, samples, strict=True)
            if isinstance(image, torch.Tensor)
        ]
        if len({tuple(image.shape) for image, _ in kept}) > 1:
            raise DataError(f"images in {root / split} differ in size; load it as folder:{root} instead")
        arrays[f"{split}_x"] = torch.stack([image for image, _ in kept]).numpy()
        arrays[f"{split}_y"] = np.array([y for _, y in kept], dtype=np.int64)
        dropped += skipped + failed
    arrays["bad"] = np.array([str(p) for p, _ in dropped], dtype=str)
    arrays["bad_reasons"] = np.array([why for _, why in dropped], dtype=str)
    return arrays


def _save_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the .npz cache atomically; a failure (e.g. a read-only cache folder) only costs a decode later."""
    try:
        atomic_write(path, lambda tmp: np.savez(tmp, **arrays))
    except OSError as e:
        warnings.warn(
            f"could not write the decoded-image cache {path}: {e}; the next load decodes again", stacklevel=3
        )


def read_png_tree(root: Path, strict: bool) -> tuple[TensorSplit, TensorSplit, list[str], list[Dropped]]:
    """Read a train/ + test/ PNG tree into (train, test, classes, dropped files), cached as .npz after decoding."""
    cache = _png_cache_file(root)
    if cache.is_file():
        with np.load(cache) as f:
            arrays = {k: f[k] for k in f.files}
    else:
        arrays = _decode_png_tree(root, strict)
        _save_atomically(cache, arrays)
    bad = [Dropped(Path(p), str(why)) for p, why in zip(arrays["bad"], arrays["bad_reasons"], strict=True)]
    if bad and strict:
        path, reason = bad[0]
        raise DataError(f"corrupt or truncated image: {path} ({reason}; {len(bad)} in all); fix or delete it")
    train, test = (
        TensorSplit(torch.from_numpy(arrays[f"{s}_x"]), torch.from_numpy(arrays[f"{s}_y"]))
        for s in ("train", "test")
    )
    return train, test, [str(c) for c in arrays["classes"]], bad


def folder_split(
    folder: Path, classes: list[str], known: Path | str, channels: int, size: tuple[int, int], strict: bool
) -> tuple[FolderSplit, list[Dropped]]:
    """A folder of class folders as a split over `classes` (those of train/, or a model's: `known` names
    them); it may hold some of them, but a class they lack is an error."""
    found = scan_classes(folder)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder} has classes missing from {known}: {', '.join(unknown)}")
    samples, bad = drop_incomplete([(p, classes.index(c)) for c, ps in found.items() for p in ps], strict)
    return FolderSplit(samples, classes, channels, size, strict=strict), bad


def read_image_folders(
    root: Path, channels: int, image_size: tuple[int, int], val_split: float, strict: bool
) -> tuple[FolderSplit, FolderSplit | None, FolderSplit, list[Dropped], str]:
    """Scan an image-folder tree into (train, val or None, test, dropped files, the role of each split in words).

    Layouts (the roles are stated in a run's first line):
    - train/ + val/ + test/: each folder is its split.
    - train/ + test/: `val_split` carves validation out of train/ (else nothing validates).
    - train/ + val/: val/ is the test split (it is what such downloads, Imagenette's among them, report on);
      `val_split` carves validation out of train/.
    - class folders only: `val_split` holds out that fraction for test and again for validation (seeded, per
      class)."""
    train_dir = root / "train" if (root / "train").is_dir() else root
    found = scan_classes(train_dir)
    classes = list(found)
    samples, bad = drop_incomplete([(p, i) for i, c in enumerate(classes) for p in found[c]], strict)
    train = FolderSplit(samples, classes, channels, image_size, strict=strict)
    has = {d: train_dir != root and (root / d).is_dir() for d in ("val", "test")}
    if has["val"] and has["test"] and val_split > 0:
        raise DataError(f"{root} has val/ and test/ folders: leave out val_split (val/ validates)")
    if not (has["val"] or has["test"]):
        if val_split <= 0:
            raise DataError(f"{root} has no train/ with test/ (or val/) folders: pass val_split (e.g. 0.2) to "
                            "hold out images")  # fmt: skip
        keep, held_out = stratified_split(train.targets, val_split)
        test, train = train.subset(held_out), train.subset(keep)
    else:
        test, test_bad = folder_split(root / ("test" if has["test"] else "val"), classes, train_dir, channels,
                                       image_size, strict)  # fmt: skip
        bad += test_bad
    val = None
    if has["val"] and has["test"]:
        val, val_bad = folder_split(root / "val", classes, train_dir, channels, image_size, strict)
        bad += val_bad
    elif val_split > 0:
        keep, held_out = stratified_split(train.targets, val_split)
        val, train = train.subset(held_out), train.subset(keep)
    return train, val, test, bad, _roles(has, val_split)


def _roles(has: dict[str, bool], val_split: float) -> str:
    """What each split of an image-folder tree is for, in words (a run states it in its first line)."""
    if has["val"] and has["test"]:
        return "train/ trains, val/ validates, test/ tests"
    if not (has["val"] or has["test"]):
        return f"class folders: {val_split:.0%} held out to test, {val_split:.0%} of the rest to validate"
    tested = "test/ tests" if has["test"] else "val/ tests (there is no test/)"
    validates = (f"{val_split:.0%} of train/ validates" if val_split > 0
                 else "nothing validates (--val-split F carves it from train/)")  # fmt: skip
    return f"train/ trains, {tested}, {validates}"
