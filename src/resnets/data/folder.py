"""Image-folder data sets (class sub-folders of image files), decoded from disk on demand."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

from resnets.data.errors import DataError
from resnets.data.seeds import mix_seed

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
EVAL_RESIZE = 1.14  # eval: resize the short side to 1.14x the crop (256/224), then center-crop
_PNG_MAGIC, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def looks_complete(path: Path) -> bool:
    """Cheaply check an image file's signature and end marker, to catch garbage and truncated files."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            f.seek(max(size - 64, 0))
            tail = f.read()
    except OSError:
        return False
    if head.startswith(_PNG_MAGIC):
        return _PNG_END in tail
    if head.startswith(b"\xff\xd8\xff"):
        return b"\xff\xd9" in tail  # 0xFFD9 can only be the end-of-image marker in a JPEG stream
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return int.from_bytes(head[4:8], "little") + 8 <= size
    return False


def scan_classes(root: Path) -> dict[str, list[Path]]:
    """List each class folder's image files under `root`, failing clearly on a missing or empty layout."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}; check the path (expected <class>/<image> folders)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"no class folders in {root}: expected one sub-folder of images per class")
    classes = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            files = sorted(Path(e.path) for e in entries if e.name.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
            )
        classes[folder.name] = files
    return classes


def drop_incomplete(
    samples: list[tuple[Path, int]], strict: bool
) -> tuple[list[tuple[Path, int]], list[Path]]:
    """Split samples into readable-looking ones and corrupt files; with `strict`, a corrupt file is an error."""
    good, bad = [], []
    for sample in samples:
        (good if looks_complete(sample[0]) else bad).append(sample)
    if bad and strict:
        raise DataError(f"corrupt or truncated image: {bad[0][0]} ({len(bad)} in all); fix or delete it")
    return good, [path for path, _ in bad]


def warn_skipped(bad: Sequence[Path], where: Path | str) -> None:
    """Emit the one summary warning for the corrupt images skipped while loading a data set."""
    if bad:
        shown = ", ".join(str(p) for p in bad[:3]) + (" ..." if len(bad) > 3 else "")
        warnings.warn(
            f"skipped {len(bad)} corrupt or truncated image(s) in {where}: {shown} (strict=True makes this an error)",
            stacklevel=3,
        )


def read_image(path: Path, channels: int) -> torch.Tensor:
    """Decode an image file into uint8 (C, H, W), converting to gray (1) or RGB (3) as asked."""
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        return decode_image(str(path), mode=mode)
    except (RuntimeError, OSError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from e


def random_resized_crop_box(height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """Sample an Inception-style crop box (top, left, h, w): 8-100% of the area, aspect ratio 3/4 to 4/3."""
    area = height * width
    log_ratio = (math.log(3 / 4), math.log(4 / 3))
    for _ in range(10):
        u = torch.rand(3, generator=generator).tolist()
        target = area * (0.08 + 0.92 * u[0])
        ratio = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    side = min(height, width)  # fall back to the largest centred square
    return (height - side) // 2, (width - side) // 2, side, side


@dataclass(eq=False)
class FolderSplit(Dataset):
    """A streaming split: (path, label) samples decoded, resized and cropped to uint8 (C, H, W) per item."""

    samples: list[tuple[Path, int]]
    classes: list[str]
    channels: int
    image_size: tuple[int, int]
    train: bool = False  # random-resized crop (+ flip) instead of resize + center crop
    flip: bool = True
    seed: int = 0  # with the index, seeds each item's random crop, so workers and reruns agree
    strict: bool = False  # raise on an image that fails to decode instead of using the next one

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        """The label of every sample, in order."""
        return [label for _, label in self.samples]

    def subset(self, index: Sequence[int]) -> FolderSplit:
        """Return a split holding only the samples in `index`."""
        return replace(self, samples=[self.samples[i] for i in index])

    def view(self, *, train: bool, flip: bool = True, seed: int = 0) -> FolderSplit:
        """Return the same samples with training (random) or evaluation (deterministic) transforms."""
        return replace(self, train=train, flip=flip, seed=seed)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                image = read_image(path, self.channels)
            except DataError as e:
                if self.strict:
                    raise
                warnings.warn(f"{e}; using the next image instead", stacklevel=2)
                continue
            return self._transform(image, index), label
        raise DataError("no image in this split can be decoded")

    def _transform(self, image: torch.Tensor, index: int) -> torch.Tensor:
        size = list(self.image_size)
        if not self.train:
            image = TF.resize(image, [round(EVAL_RESIZE * max(size))], antialias=True)
            return TF.center_crop(image, size)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, index))
        top, left, h, w = random_resized_crop_box(image.shape[-2], image.shape[-1], generator)
        image = TF.resized_crop(image, top, left, h, w, size, antialias=True)
        if self.flip and bool(torch.rand(1, generator=generator) < 0.5):
            image = image.flip(-1)
        return image
