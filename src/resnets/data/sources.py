"""Where each named data set lives: the search path, and the torchvision download as a last resort."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from resnets.data.errors import DataError
from resnets.files import cache_dir

FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
_CIFAR_PICKLES = {
    "cifar10": ("cifar-10-batches-py", "data_batch_1"),
    "cifar100": ("cifar-100-python", "train"),
}


def fashion_file(folder: Path, stem: str) -> Path | None:
    """The IDX file `stem` in `folder`, plain or gzipped, or None if it is not there."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _holds_fashion(folder: Path) -> Path | None:
    return folder if all(fashion_file(folder, stem) for stem in FASHION_FILES) else None


def _holds_cifar(name: str) -> Callable[[Path], Path | None]:
    """A check returning the CIFAR data inside a folder: the pickle-batch folder or a train/ + test/ PNG root."""
    subdir, marker = _CIFAR_PICKLES[name]

    def check(folder: Path) -> Path | None:
        for candidate in (folder / subdir, folder):
            if (candidate / marker).is_file():
                return candidate
        return folder if (folder / "train").is_dir() and (folder / "test").is_dir() else None

    return check


def _holds_image_folders(folder: Path) -> Path | None:
    return folder if (folder / "train").is_dir() else None


def _search(
    name: str,
    root: str | Path | None,
    subdirs: tuple[str, ...],
    holds: Callable[[Path], Path | None],
    extra: tuple[Path, ...] = (),
) -> tuple[Path | None, list[Path]]:
    """Look for a data set: the explicit root only, else $RESNETS_DATA/<subdir>, the cache and `extra`."""
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        env = os.environ.get("RESNETS_DATA")
        bases = [Path(env).expanduser()] if env else []
        candidates = [base / sub for base in bases for sub in subdirs] + bases
        candidates += [cache_dir() / sub for sub in subdirs] + list(extra)
    for folder in candidates:
        found = holds(folder) if folder.is_dir() else None
        if found:
            return found, candidates
    if root is not None:
        raise DataError(
            f"{name} not found in {candidates[0]}: the folder does not exist or lacks the expected files"
        )
    return None, candidates


def _download(name: str, fetch: Callable[[], object], looked: list[Path], hint: str) -> None:
    """Run a torchvision download, turning any failure into a DataError that says how to get the data."""
    try:
        fetch()
    except Exception as e:  # network, disk and archive errors all mean the same thing to the user
        where = ", ".join(str(p) for p in looked)
        raise DataError(f"{name} not found (looked in {where}) and the download failed ({e}). {hint}") from e


def _not_found(name: str, looked: list[Path], hint: str) -> DataError:
    where = ", ".join(str(p) for p in looked)
    return DataError(f"{name} not found (looked in {where}) and download=False. {hint}")


def find_fashion_mnist(root: str | Path | None, download: bool) -> Path:
    """Find the folder holding the four Fashion-MNIST IDX files, downloading them if allowed."""
    torchvision_raw = cache_dir() / "fashion-mnist" / "FashionMNIST" / "raw"
    found, looked = _search(
        "fashion-mnist", root, ("fashion-mnist",), _holds_fashion, (torchvision_raw, DEBIAN_FASHION)
    )
    if found:
        return found
    hint = "Install it with `apt-get install -y dataset-fashion-mnist`, or set RESNETS_DATA to a folder holding it."
    if not download:
        raise _not_found("fashion-mnist", looked, hint)
    from torchvision.datasets import FashionMNIST

    _download(
        "fashion-mnist", lambda: FashionMNIST(str(cache_dir() / "fashion-mnist"), download=True), looked, hint
    )
    return torchvision_raw


def find_cifar(name: str, root: str | Path | None, download: bool) -> Path:
    """Find CIFAR-10/100 as torchvision pickle batches or a train/ + test/ PNG folder, downloading if allowed."""
    found, looked = _search(name, root, (name,), _holds_cifar(name))
    if found:
        return found
    hint = f"Set RESNETS_DATA to a folder holding {name}/ (pickle batches or train/ and test/ PNG folders)."
    if not download:
        raise _not_found(name, looked, hint)
    from torchvision.datasets import CIFAR10, CIFAR100

    dataset = CIFAR10 if name == "cifar10" else CIFAR100
    _download(name, lambda: dataset(str(cache_dir() / name), download=True), looked, hint)
    return cache_dir() / name / _CIFAR_PICKLES[name][0]


def find_imagenette(root: str | Path | None, download: bool) -> Path:
    """Find Imagenette (320 px) as a train/ + val/ image-folder tree, downloading it if allowed."""
    found, looked = _search("imagenette", root, ("imagenette2-320", "imagenette"), _holds_image_folders)
    if found:
        return found
    hint = "Set RESNETS_DATA to a folder holding imagenette2-320/ (train/ and val/ class folders)."
    if not download:
        raise _not_found("imagenette", looked, hint)
    from torchvision.datasets import Imagenette

    _download("imagenette", lambda: Imagenette(str(cache_dir()), size="320px", download=True), looked, hint)
    return cache_dir() / "imagenette2-320"
