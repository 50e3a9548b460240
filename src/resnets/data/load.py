"""load_dataset: one call from a data set name to a ready DataBundle."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from resnets.data.bundle import (
    DataBundle,
    TensorSplit,
    balanced_subset,
    convert_channels,
    convert_stats,
    stratified_split,
)
from resnets.data.errors import DataError
from resnets.data.folder import EVAL_RESIZE, Dropped, eval_resize, warn_skipped
from resnets.data.readers import (
    folder_split,
    read_cifar_pickles,
    read_fashion_mnist,
    read_image_folders,
    read_png_tree,
)
from resnets.data.sources import find_cifar, find_fashion_mnist, find_imagenette

NAMES = ("fashion-mnist", "cifar10", "cifar100", "imagenette", "folder:PATH")
STATS = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
# Folder sets use ImageNet statistics, matching the pretrained weights used for transfer learning.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DEFAULT_FOLDER_SIZE = 224


def load_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    channels: int | None = None,
    image_size: int | None = None,
    val_split: float = 0.0,
    strict: bool = False,
    download: bool = True,
    limit: int | None = None,
    eval_resize: float = EVAL_RESIZE,
) -> DataBundle:
    """Load a data set by name: fashion-mnist, cifar10, cifar100, imagenette or folder:PATH.

    `channels` (1 or 3) converts the images (gray repeated to RGB, or RGB to luma); `image_size`
    sets the side the model sees (in-memory sets are resized per batch by the loader). `val_split` > 0
    holds out that fraction of train (seeded, per class) as the validation split, which selects checkpoints
    and thresholds; the test split stays the official one and is only reported.
    `limit` keeps at most that many training images, balanced over classes. `strict` turns skipped
    corrupt images into errors; `download=False` never touches the network. Image folders are evaluated
    with the short side resized to `eval_resize` x the image size, then centre-cropped (in-memory sets whole).
    """
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if not 0.0 <= val_split < 1.0:
        raise DataError(f"val_split must be in [0, 1), got {val_split}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of images, got {limit}")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    streamed = is_streamed(name)
    if image_size is not None:
        check_image_size(image_size, channels or (1 if name == "fashion-mnist" else 3), streamed)
    if not 1 <= eval_resize <= 4:
        raise DataError(f"eval_resize is the evaluation resize over the crop, in [1, 4], got {eval_resize}")
    if streamed:
        bundle = _load_folders(name, root, channels, image_size, val_split, strict, download, limit)
        return bundle.evaluated_at(eval_resize)
    bad: list[Dropped] = []
    if name == "fashion-mnist":
        source = find_fashion_mnist(root, download)
        train, test, classes = read_fashion_mnist(source)
    elif name in ("cifar10", "cifar100"):
        source = find_cifar(name, root, download)
        if (source / "train").is_dir():
            train, test, classes, bad = read_png_tree(source, strict)
        else:
            train, test, classes = read_cifar_pickles(source, name)
    else:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(NAMES)}")
    warn_skipped(bad, source)
    val = None
    if val_split > 0:
        keep, held_out = stratified_split(train.labels.tolist(), val_split)
        train, val = train.subset(keep), train.subset(held_out)
    if limit is not None:
        train = train.subset(balanced_subset(train.labels.tolist(), limit))
    channels = channels or train.images.shape[1]
    train, val, test = (
        None if s is None else TensorSplit(convert_channels(s.images, channels), s.labels)
        for s in (train, val, test)
    )
    size = (image_size, image_size) if image_size else tuple(train.images.shape[-2:])
    validates = f"{val_split:.0%} of train validates" if val_split else "nothing validates (--val-split F)"
    roles = f"its train split trains, its test split tests, {validates}"
    return _bundle(name, classes, channels, size, STATS[name], (train, val, test), bad, source, roles)


def is_streamed(name: str) -> bool:
    """Whether the data set `name` streams from image folders (else it is held in memory as tensors)."""
    return name == "imagenette" or name.startswith("folder:")


def image_bytes(side: int, channels: int, streamed: bool) -> int:
    """Bytes one image needs at `side` px on its way to the model: a streamed folder image as uint8 at the
    evaluation resize and at the crop, then (every data set) the two float32 copies the loader holds while
    normalising. A batch needs this many times over; the model's activations need more again."""
    uint8 = eval_resize((side, side)) ** 2 + side * side if streamed else 0
    return channels * (uint8 + 2 * 4 * side * side)


def available_memory() -> int | None:
    """Bytes of memory available now: MemAvailable (Linux), else the free pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_image_size(side: int, channels: int, streamed: bool) -> None:
    """Refuse an image size whose single image cannot fit in the memory available, before any image of
    that size is allocated: the least any run at this size needs (`image_bytes`), so a typo such as
    --image-size 100000 fails with the largest size that fits instead of being killed for memory."""
    available = available_memory()
    need = image_bytes(side, channels, streamed)
    if available is None or need <= available:
        return
    largest = math.isqrt(available // image_bytes(1, channels, streamed))
    while largest > 1 and image_bytes(largest, channels, streamed) > available:
        largest -= 1
    raise DataError(f"--image-size {side} needs {need / 1e9:,.1f} GB for one {channels}-channel image but "
                    f"{available / 1e9:,.1f} GB of memory is available: the largest size that fits is "
                    f"{largest} (and a batch needs many times one image); choose a smaller --image-size")  # fmt: skip


def _load_folders(
    name: str,
    root: str | Path | None,
    channels: int | None,
    image_size: int | None,
    val_split: float,
    strict: bool,
    download: bool,
    limit: int | None,
) -> DataBundle:
    """Build a streaming bundle for imagenette or folder:PATH (PATH may be empty when `root` is given)."""
    if name == "imagenette":
        source = find_imagenette(root, download)
    else:
        path = name.removeprefix("folder:") or root
        if not path:
            raise DataError("folder: needs a path, as folder:PATH or with root=PATH")
        source = Path(path).expanduser()
    channels = channels or 3
    size = (image_size or DEFAULT_FOLDER_SIZE,) * 2
    train, val, test, bad, roles = read_image_folders(source, channels, size, val_split, strict)
    warn_skipped(bad, source)
    if limit is not None:
        train = train.subset(balanced_subset(train.targets, limit))
    return _bundle(
        name, train.classes, channels, size, IMAGENET_STATS, (train, val, test), bad, source, roles
    )


def load_class_folders(
    path: str | Path, classes: list[str], known: str, channels: int, image_size: int
) -> DataBundle:
    """Every image under a bare folder of class folders as one test split over a model's `classes` (named by
    `known`; the folder may hold some of them): evaluating on images from anywhere, no train/ needed."""
    source = Path(path).expanduser()
    size = (image_size, image_size)
    test, bad = folder_split(source, classes, known, channels, size, strict=False)
    warn_skipped(bad, source)
    if len(test) == 0:
        raise DataError(f"{source} holds no readable images in class folders ({', '.join(classes[:4])}, ...)")
    mean, std = (convert_stats(values, channels) for values in IMAGENET_STATS)
    return DataBundle(f"folder:{source}", classes, channels, size, mean, std, train=test.subset([]), test=test,
                      dropped=bad, source=source, roles=f"every image under {source} tests")  # fmt: skip


def _bundle(
    name: str,
    classes: list[str],
    channels: int,
    size: tuple[int, int],
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    splits: tuple,
    dropped: list[Dropped],
    source: Path,
    roles: str,
) -> DataBundle:
    """The DataBundle of (train, val, test) `splits`, normalised by `stats` converted to `channels`, checked:
    data that would give a meaningless number (an empty split, one class: always 100%) is refused."""
    train, val, test = splits
    mean, std = (convert_stats(values, channels) for values in stats)
    bundle = DataBundle(name, classes, channels, size, mean, std, train=train, test=test, val=val,
                        dropped=dropped, source=source, roles=roles)  # fmt: skip
    if bundle.num_classes < 2:
        raise DataError(f"{bundle.source} has {bundle.num_classes} class: classification needs at least two")
    for split in ("train", "val", "test"):
        if getattr(bundle, split) is not None and len(getattr(bundle, split)) == 0:
            raise DataError(f"{bundle.source}: the {split} split holds no readable images (check the folder, "
                            "or the skipped-image warning above)")  # fmt: skip
    warn_small_val(bundle)
    return bundle


MIN_VAL_PER_CLASS = 10


def warn_small_val(bundle: DataBundle) -> None:
    """Warn when the validation split is too small to select on (a handful of images per class)."""
    if bundle.val is None:
        return
    labels = bundle.val.targets if hasattr(bundle.val, "targets") else bundle.val.labels.tolist()
    fewest = min(labels.count(c) for c in range(bundle.num_classes))
    if fewest < MIN_VAL_PER_CLASS:
        warnings.warn(f"the validation split of {bundle.name} has only {fewest} image(s) of some class: too few to "
                      "select checkpoints or thresholds on reliably; " + ("add images to val/" if "val/ validates" in
                      bundle.roles else "carve a larger one with --val-split"),
                      stacklevel=2)  # fmt: skip
