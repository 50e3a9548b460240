"""Pack a CIFAR-10 PNG tree (train/<class>/*.png, test/<class>/*.png) into a few small chunks that can travel
with the source tree to a GPU machine, and unpack them there into torchvision's python batches.

    python scripts/pack_cifar.py ../shared/data/cifar10 gpu_data/cifar10

Each chunk is an lzma-compressed .npz of (N, 3, 32, 32) uint8 images (coded by `encode`, which with lzma
keeps ~57% of the raw bytes where zlib alone keeps ~88%), their labels and split. All of CIFAR-10 packs to
~100 MiB: more than the 64 MiB a device call carries with Fashion-MNIST (30 MiB) beside it, so by default
a class-balanced subset is packed, ~26 MiB (--train-per-class, --test-per-class; 5000 and 1000 take all).
"""

from __future__ import annotations

import argparse
import io
import lzma
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CHUNK_GLOB = "cifar10-*.npz.xz"
MIB = 2**20


def read_split(root: Path, split: str, per_class: int, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` images (sorted by file name) of each class, as (N, 3, 32, 32) uint8 and labels."""
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / split / name).glob("*.png"))[:per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def encode(images: np.ndarray) -> np.ndarray:
    """Red and blue as differences from green, then each value minus its left and upper neighbours'
    prediction (left + up - upper-left), all mod 256: smooth images become mostly small numbers."""
    planes = images.copy()
    planes[:, 0] -= images[:, 1]
    planes[:, 2] -= images[:, 1]
    rows = np.diff(planes, axis=-1, prepend=np.zeros_like(planes[..., :1]))
    return np.diff(rows, axis=-2, prepend=np.zeros_like(rows[..., :1, :]))


def decode(codes: np.ndarray) -> np.ndarray:
    """Undo `encode`: uint8 sums wrap mod 256, exactly inverting its differences."""
    planes = np.cumsum(np.cumsum(codes, axis=-2, dtype=np.uint8), axis=-1, dtype=np.uint8)
    images = planes.copy()
    images[:, 0] += planes[:, 1]
    images[:, 2] += planes[:, 1]
    return images


def pack(src: Path, dest: Path, train_per_class: int, test_per_class: int, chunk_mib: float) -> list[Path]:
    """Write the chunks (each under `chunk_mib`) into `dest`; returns their paths."""
    classes = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    parts = [(*read_split(src, "train", train_per_class, classes), False)]
    parts.append((*read_split(src, "test", test_per_class, classes), True))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    is_test = np.concatenate([np.full(len(p[1]), p[2]) for p in parts])
    estimate = images.nbytes * 0.6  # compressed size, from the ratio above (with a margin)
    count = max(1, int(np.ceil(estimate / (chunk_mib * MIB))))
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(CHUNK_GLOB):
        old.unlink()
    paths = []
    for i, index in enumerate(np.array_split(np.arange(len(labels)), count)):
        buffer = io.BytesIO()
        np.savez(buffer, images=encode(images[index]), labels=labels[index], is_test=is_test[index],
                 classes=np.array(classes))  # fmt: skip
        path = dest / f"cifar10-{i}.npz.xz"
        path.write_bytes(lzma.compress(buffer.getvalue(), preset=6))
        if path.stat().st_size > chunk_mib * MIB:
            raise RuntimeError(f"{path} came out over {chunk_mib} MiB: pack again with a larger --chunk-mib")
        paths.append(path)
    return paths


def unpack(chunks: Path, dest: Path) -> Path:
    """Write the chunks in `chunks` as torchvision's `cifar-10-batches-py` folder under `dest` (which
    `resnets` reads as `--data cifar10 --data-root DEST`); returns that folder."""
    paths = sorted(chunks.glob(CHUNK_GLOB))
    if not paths:
        raise FileNotFoundError(f"no {CHUNK_GLOB} chunks in {chunks}: make them with scripts/pack_cifar.py")
    arrays: dict[str, list[np.ndarray]] = {"images": [], "labels": [], "is_test": []}
    classes: list[str] = []
    for path in paths:
        with np.load(io.BytesIO(lzma.decompress(path.read_bytes()))) as f:
            for key, values in arrays.items():
                values.append(f[key])
            classes = [str(c) for c in f["classes"]]
    images = decode(np.concatenate(arrays["images"]))
    labels, is_test = np.concatenate(arrays["labels"]), np.concatenate(arrays["is_test"])
    folder = dest / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = np.flatnonzero(~is_test)
    batches = {f"data_batch_{i + 1}": part for i, part in enumerate(np.array_split(train, 5))}
    batches["test_batch"] = np.flatnonzero(is_test)
    for name, index in batches.items():
        batch = {b"data": images[index].reshape(len(index), -1), b"labels": labels[index].tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in classes]}))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, nargs="?", default=Path("../shared/data/cifar10"))
    parser.add_argument("dest", type=Path, nargs="?", default=Path("gpu_data/cifar10"))
    parser.add_argument("--train-per-class", type=int, default=1300, help="default 1300 (all: 5000)")
    parser.add_argument("--test-per-class", type=int, default=250, help="default 250 (all: 1000)")
    parser.add_argument("--chunk-mib", type=float, default=45.0, help="largest chunk (default 45 MiB)")
    args = parser.parse_args()
    paths = pack(args.src, args.dest, args.train_per_class, args.test_per_class, args.chunk_mib)
    total = sum(p.stat().st_size for p in paths) / MIB
    print(f"{len(paths)} chunk(s), {total:.1f} MiB in all, in {args.dest}")


if __name__ == "__main__":
    main()
