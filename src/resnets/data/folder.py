"""Image-folder data sets (class sub-folders of image files), decoded from disk on demand (libjpeg-turbo, Pillow)."""

from __future__ import annotations

import fnmatch
import functools
import glob
import io
import math
import os
import stat
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from resnets.data.augment import INCEPTION_CROP_RATIO, INCEPTION_CROP_SCALE
from resnets.data.errors import DataError
from resnets.data.seeds import mix_seed

try:  # a declared dependency; where it is missing (the source tree run on a GPU machine's own Python, see
    # docs/gpu.md) Pillow decodes JPEGs as well, to the same pixels, only slower
    import simplejpeg
except ImportError:
    simplejpeg = None

# The raster formats people keep training images in; Pillow reads them all (TIFF and GIF: the first page).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
EVAL_RESIZE = 1.14  # eval: resize the short side to 1.14x the crop (256/224), then center-crop
_PNG_MAGIC, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # 16-bit gray (PNG, TIFF); "I" holds them as int32


class UnreadableImage(DataError):
    """An image file that cannot be decoded, or is over the pixel limit; `reason` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot decode {path}: {reason}")
        self.path, self.reason = path, reason


class Dropped(NamedTuple):
    """An image left out of a data set, and why."""

    path: Path
    reason: str


def read_image(path: Path, channels: int, min_side: int = 0) -> torch.Tensor:
    """Decode an image file into uint8 (C, H, W), gray (1) or RGB (3): the one decoder for training and predict.

    JPEGs (YCbCr, RGB or gray) are decoded by libjpeg-turbo through simplejpeg straight into the returned
    array, with the pixels Pillow gives; every other format, and any JPEG simplejpeg refuses (CMYK, a truncated
    or corrupt stream), is read by Pillow, which decides. Multi-page TIFF and GIF give their first page,
    16-bit images are scaled to 8 bits and colour is converted as Pillow does (ITU-R 601 luma for gray, alpha
    dropped). A JPEG whose short side is at least twice `min_side` is decoded at 1/2, 1/4 or 1/8 scale, never
    below `min_side`, which is much faster. An image over `PIL.Image.MAX_IMAGE_PIXELS` pixels is refused
    before decoding, so one huge file cannot exhaust memory.
    """
    try:
        with open_regular(path) as file:
            jpeg = file.read(len(_JPEG_MAGIC)) == _JPEG_MAGIC
            file.seek(0)
            data = file.read() if jpeg else b""
            array = _turbo_jpeg(path, data, channels, min_side) if jpeg else None
            if array is None:
                array = _pillow(path, io.BytesIO(data) if jpeg else file, channels, min_side)
    except OSError as e:  # the file cannot be opened or read
        raise UnreadableImage(path, str(e) or type(e).__name__) from e
    # RGB stays a channels-last view (as torchvision's decoders returned): uint8 antialiased resize is ~2x
    # faster on it than on a contiguous (C, H, W) copy, which would cost a copy as well
    return torch.from_numpy(array.reshape(*array.shape[:2], -1)).permute(2, 0, 1)


def open_regular(path: Path) -> BinaryIO:
    """Open `path` for binary reading only if it is a regular file, else raise OSError at once: a FIFO named
    x.png would block forever and a device never end. It is opened non-blocking and checked with fstat, so
    a file swapped for a FIFO after the folder was listed cannot hang a worker either."""
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX; elsewhere a FIFO cannot carry an image name
    fd = os.open(path, os.O_RDONLY | nonblocking)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file (a FIFO, device or folder): move it out of the data")
        if nonblocking:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _turbo_jpeg(path: Path, data: bytes, channels: int, min_side: int) -> np.ndarray | None:
    """Decode a JPEG with libjpeg-turbo into a writable (H, W, C) array; None where Pillow has to decide."""
    if simplejpeg is None:
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise UnreadableImage(path, _over_limit(width, height, limit))
    if colorspace not in ("YCbCr", "RGB", "Gray"):  # CMYK, YCCK: Pillow's conversion, not simplejpeg's
        return None
    scale = _draft_scale(width, height, min_side)
    try:
        # strict: a libjpeg warning (truncated or corrupt data) raises, and Pillow then decides
        return simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if channels == 1 else "RGB",
            min_height=-(-height // scale),  # the sizes Pillow's draft gives: ceil(side / scale)
            min_width=-(-width // scale),
        )
    except ValueError:
        return None


def _draft_scale(width: int, height: int, min_side: int) -> int:
    """The DCT scale-down `Image.draft` picks: the largest of 8, 4, 2 keeping both sides >= min_side, else 1."""
    return next((s for s in (8, 4, 2) if min_side and s * min_side <= min(width, height)), 1)


def _pillow(path: Path, source: BinaryIO, channels: int, min_side: int) -> np.ndarray:
    """Decode any format Pillow reads into a writable (H, W) or (H, W, 3) uint8 array."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(source) as image:
            width, height = image.size
            if limit and width * height > limit:
                raise UnreadableImage(path, _over_limit(width, height, limit))
            mode = "L" if channels == 1 else "RGB"
            if image.format == "JPEG":
                # libjpeg scales in the DCT and converts YCbCr to gray itself: decodes far less
                image.draft(mode, (min_side, min_side) if min_side else None)
            image.load()
            image = _to_mode(image, mode)
    except UnreadableImage:
        raise
    except Image.DecompressionBombError as e:  # Pillow refuses twice the limit on open, before we see a size
        raise UnreadableImage(path, f"{e}; raise PIL.Image.MAX_IMAGE_PIXELS to read it") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise UnreadableImage(path, str(e) or type(e).__name__) from e
    return np.asarray(image).copy()  # Pillow's buffer is read-only


def _over_limit(width: int, height: int, limit: int) -> str:
    return (
        f"{width}x{height} = {width * height:,} pixels is over the limit of {limit:,} "
        "(PIL.Image.MAX_IMAGE_PIXELS): shrink the image or raise the limit"
    )


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to 8-bit "L" or "RGB"; 16-bit values are scaled by 255/65535 (x / 257, rounded)."""
    if image.mode in _SIXTEEN_BIT:
        wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8))  # mode "L"
    return image if image.mode == mode else image.convert(mode)


def suspect(path: Path) -> str | None:
    """Cheaply check a file's signature and end marker: None if it looks whole, else why it may not be.

    Only a hint (a decode decides): valid files can fail it, e.g. a JPEG with data after its end marker
    (phone "motion photos", appended metadata) or a PNG with bytes after IEND.
    """
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(16)
            f.seek(max(size - 64, 0))
            tail = f.read()
    except OSError as e:
        return str(e)
    if head.startswith(_PNG_MAGIC):
        return None if _PNG_END in tail else "no PNG end chunk (IEND) at the end of the file"
    if head.startswith(_JPEG_MAGIC):  # 0xFFD9 can only be the end-of-image marker in a JPEG stream
        return None if b"\xff\xd9" in tail else "no JPEG end marker at the end of the file"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return (
            None if int.from_bytes(head[4:8], "little") + 8 <= size else "WebP shorter than its header says"
        )
    if head[:2] == b"BM":  # the header's file size; some writers leave it 0
        return None if int.from_bytes(head[2:6], "little") <= size else "BMP shorter than its header says"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return None if tail.endswith(b";") else "no GIF trailer at the end of the file"
    if head[:4] in _TIFF_MAGIC:
        return _tiff_suspect(path, size)
    return "not a PNG, JPEG, WebP, BMP, GIF or TIFF signature"


def _tiff_suspect(path: Path, size: int) -> str | None:
    """A TIFF has no end marker, but its first page's strip (or tile) table says where the pixels end."""
    try:
        with Image.open(path) as image:
            tags = image.tag_v2
            offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        return str(e) or type(e).__name__
    if not offsets or not counts or len(offsets) != len(counts):
        return "TIFF without a readable strip or tile table"
    end = max(o + c for o, c in zip(offsets, counts, strict=True))
    return None if end <= size else "TIFF pixels run past the end of the file"


def verify(path: Path) -> str | None:
    """Decode `path` (at a reduced scale when it is a JPEG): None if it reads, else the decoder's reason."""
    try:
        read_image(path, 1, min_side=1)
    except UnreadableImage as e:
        return e.reason
    return None


def scan_classes(root: Path) -> dict[str, list[Path]]:
    """List each class folder's image files (regular files only) under `root`, failing clearly on a missing or
    empty layout."""
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}; check the path (expected <class>/<image> folders)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"no class folders in {root}: expected one sub-folder of images per class")
    classes = {}
    for folder in folders:
        with os.scandir(folder) as entries:
            files = sorted(Path(e.path) for e in entries if _is_image_file(e))
        if not files:
            raise DataError(
                f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove it"
            )
        classes[folder.name] = files
    return classes


def _is_image_file(entry: os.DirEntry) -> bool:
    """An image file by its suffix that is a regular file (links followed): a FIFO, device or folder named
    x.png is never listed, since opening it could block training forever."""
    try:
        return entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file()
    except OSError:  # vanished, or a link loop
        return False


def regular_files(root: Path) -> Iterator[Path]:
    """Every regular file below `root`, links followed but each real folder entered once and each real file
    given once (the shallowest path wins), so a link loop ends; FIFOs, devices and broken links are left out."""
    try:
        seen = {_identity(root)}
    except OSError:
        return
    queue = deque([root])
    while queue:
        folder = queue.popleft()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError:  # unreadable, or vanished
            continue
        for entry in entries:
            try:
                is_dir, is_file, key = entry.is_dir(), entry.is_file(), _identity(Path(entry.path))
            except OSError:  # a broken link or a link loop
                continue
            if (is_dir or is_file) and key not in seen:
                seen.add(key)
                if is_dir:
                    queue.append(folder / entry.name)
                else:
                    yield folder / entry.name


def _identity(path: Path) -> tuple[int, int]:
    """What `path` really is, links followed: (device, inode)."""
    info = path.stat()
    return info.st_dev, info.st_ino


def glob_files(pattern: str) -> list[Path]:
    """The regular files a glob pattern matches, each real file once. A `**` part (any folders) is matched
    over `regular_files`, never by glob.glob(recursive=True), which follows link loops without end."""
    parts = Path(pattern).parts
    if "**" not in parts:  # the pattern bounds the depth
        found = {}
        for name in glob.glob(pattern):
            try:
                if os.path.isfile(name):
                    found.setdefault(_identity(Path(name)), Path(name))
            except OSError:
                continue
        return list(found.values())
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = Path(*parts[:first])
    return [p for p in regular_files(base) if _glob_match(p.relative_to(base).parts, parts[first:])]


def _glob_match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """glob's rules for a relative path: `**` matches any number of folders, another part one name
    (fnmatch); a hidden name (.x) matches only a part starting with a dot, never `**`. Memoised over
    (part, pattern part), so many `**` cost no more than one."""

    @functools.cache
    def match(i: int, j: int) -> bool:
        if j == len(pattern):
            return i == len(parts)
        if i < len(parts) and parts[i].startswith(".") and not pattern[j].startswith("."):
            return pattern[j] == "**" and match(i, j + 1)  # `**` may still match no folder
        if pattern[j] == "**":
            return match(i, j + 1) or (i < len(parts) and match(i + 1, j))
        return i < len(parts) and fnmatch.fnmatch(parts[i], pattern[j]) and match(i + 1, j + 1)

    return match(0, 0)


def drop_incomplete(
    samples: list[tuple[Path, int]], strict: bool
) -> tuple[list[tuple[Path, int]], list[Dropped]]:
    """Split samples into readable ones and the files dropped (with why); with `strict`, a dropped file is an error.

    The cheap `suspect` check runs on every file; only the files it flags are decoded here, and only those
    that then fail to decode are dropped.
    """
    good, dropped = [], []
    for sample in samples:
        hint = suspect(sample[0])
        failure = hint and verify(sample[0])
        if failure:
            dropped.append(Dropped(sample[0], f"{hint}; decoding failed: {failure}"))
        else:
            good.append(sample)
    if dropped and strict:
        path, reason = dropped[0]
        raise DataError(
            f"corrupt or truncated image: {path} ({reason}; {len(dropped)} in all); fix or delete it"
        )
    return good, dropped


def warn_skipped(dropped: Sequence[Dropped], where: Path | str) -> None:
    """Emit the one summary warning for the corrupt images skipped while loading a data set."""
    if dropped:
        shown = "; ".join(f"{p} ({why})" for p, why in dropped[:3]) + (" ..." if len(dropped) > 3 else "")
        warnings.warn(
            f"skipped {len(dropped)} corrupt or truncated image(s) in {where}: {shown} (strict=True makes this an error)",
            stacklevel=3,
        )


def eval_resize(image_size: tuple[int, int], factor: float = EVAL_RESIZE) -> int:
    """The short side images are resized to before the evaluation centre crop: `factor` x the crop (255 for
    224 by default, about torchvision's 256; fastai resizes to the crop itself, factor 1, and keeps it whole)."""
    return round(factor * max(image_size))


def eval_preprocess(image: torch.Tensor, resize: int, crop: tuple[int, int]) -> torch.Tensor:
    """The one evaluation transform (training's evaluation, `evaluate`, `predict`): resize the short side to
    `resize`, then centre-crop `crop`, uint8 in and out."""
    image = TF.resize(image, [resize], antialias=True)
    return TF.center_crop(image, list(crop))


def random_resized_crop_box(
    height: int,
    width: int,
    generator: torch.Generator,
    min_area: float = INCEPTION_CROP_SCALE,
    max_ratio: float = INCEPTION_CROP_RATIO,
) -> tuple[int, int, int, int]:
    """Sample an Inception-style crop box (top, left, h, w): `min_area` to 100% of the area (8% by default,
    torchvision's RandomResizedCrop `scale`, fastai's `min_scale`), aspect ratio 1/`max_ratio` to `max_ratio`
    (3/4 to 4/3 by default; fastai's aug_transforms crop squares, 1)."""
    area = height * width
    log_ratio = (-math.log(max_ratio), math.log(max_ratio))
    for _ in range(10):
        u = torch.rand(3, generator=generator).tolist()
        target = area * (min_area + (1 - min_area) * u[0])
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
    crop_scale: float = INCEPTION_CROP_SCALE  # the smallest random-resized crop, as a fraction of the area
    crop_ratio: float = INCEPTION_CROP_RATIO  # the random-resized crop's aspect ratio lies in [1/this, this]
    eval_factor: float = EVAL_RESIZE  # evaluation: the short side is resized to this x the crop, then cropped
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

    def view(
        self,
        *,
        train: bool,
        flip: bool = True,
        seed: int = 0,
        crop_scale: float = INCEPTION_CROP_SCALE,
        crop_ratio: float = INCEPTION_CROP_RATIO,
    ) -> FolderSplit:
        """Return the same samples with training (random) or evaluation (deterministic) transforms."""
        return replace(self, train=train, flip=flip, seed=seed, crop_scale=crop_scale, crop_ratio=crop_ratio)

    @property
    def min_side(self) -> int:
        """The shortest image side the transforms can use without upsampling: JPEGs decode no smaller."""
        side = max(self.image_size)
        return math.ceil(side / math.sqrt(self.crop_scale)) if self.train else round(self.eval_factor * side)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                image = read_image(path, self.channels, self.min_side)
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
            return eval_preprocess(image, eval_resize(self.image_size, self.eval_factor), self.image_size)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, index))
        top, left, h, w = random_resized_crop_box(
            image.shape[-2], image.shape[-1], generator, self.crop_scale, self.crop_ratio
        )
        image = TF.resized_crop(image, top, left, h, w, size, antialias=True)
        if self.flip and bool(torch.rand(1, generator=generator) < 0.5):
            image = image.flip(-1)
        return image
