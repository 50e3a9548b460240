"""Rebuild tests/fixtures/ from the real data sets: small balanced Fashion-MNIST IDX files and CIFAR-10 PNGs."""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import struct
from pathlib import Path

import numpy as np

from resnets.data.idx import read_idx

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def balanced_first(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` images of every class, in their original order."""
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (mtime 0, so reruns give identical bytes)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def make_fashion(source: Path, out: Path, train_per_class: int, test_per_class: int) -> None:
    """Copy a balanced subset of Fashion-MNIST (train and t10k) into `out` as gzipped IDX files."""
    out.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = read_idx(source / f"{split}-labels-idx1-ubyte.gz")
        keep = balanced_first(labels, per_class)
        write_idx_gz(
            out / f"{split}-images-idx3-ubyte.gz", read_idx(source / f"{split}-images-idx3-ubyte.gz")[keep]
        )
        write_idx_gz(out / f"{split}-labels-idx1-ubyte.gz", labels[keep])


def make_cifar(source: Path, out: Path, train_per_class: int, test_per_class: int) -> None:
    """Copy the first few PNGs of every class of a train/ + test/ CIFAR-10 tree into `out`."""
    shutil.rmtree(out, ignore_errors=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for class_dir in sorted(p for p in (source / split).iterdir() if p.is_dir()):
            target = out / split / class_dir.name
            target.mkdir(parents=True)
            for png in sorted(class_dir.glob("*.png"))[:per_class]:
                shutil.copyfile(png, target / png.name)


def main() -> None:
    """Parse the source locations and rebuild both fixtures."""
    shared = os.environ.get("RESNETS_SHARED_DATA")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fashion-mnist", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--cifar10", type=Path, default=Path(shared) / "cifar10" if shared else None)
    args = parser.parse_args()
    if args.cifar10 is None:
        parser.error("pass --cifar10 PATH or set RESNETS_SHARED_DATA")
    make_fashion(args.fashion_mnist, FIXTURES / "fashion-mnist", 400, 100)
    make_cifar(args.cifar10, FIXTURES / "cifar10", 20, 5)
    print(f"fixtures written to {FIXTURES}")


if __name__ == "__main__":
    main()
