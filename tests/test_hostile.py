"""Hostile input and faults: files that try to run code, runs that would overwrite each other, bad values.

Every case here reproduces a failure a user hit; each must end in one clear line and a non-zero exit (CLI)
or a named exception (API), with nothing run, nothing lost and nothing left behind."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from resnets.data import load_dataset
from resnets.data.errors import DataError


class _RunsCode:
    """A pickle payload that creates a marker file when unpickled, as an attacker's would run a shell."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _cifar_batches(folder: Path, poison: object | None = None, labels: list[int] | None = None) -> Path:
    """A tiny torchvision-layout cifar-10-batches-py folder; `poison` is put into data_batch_3."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": labels or [0, 1, 2, 3]}
        if poison is not None and name == "data_batch_3":
            batch[b"extra"] = poison
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {b"label_names": [c.encode() for c in "abcdefghij"]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    return folder


def test_clean_cifar_pickles_load(tmp_path: Path) -> None:
    root = tmp_path / "cifar10"
    _cifar_batches(root / "cifar-10-batches-py")
    bundle = load_dataset("cifar10", root, download=False)
    assert (len(bundle.train), len(bundle.test), bundle.classes[:2]) == (20, 4, ["a", "b"])


def test_cifar_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = tmp_path / "cifar10"
    _cifar_batches(root / "cifar-10-batches-py", poison=_RunsCode(marker))
    with pytest.raises(DataError, match="refused to load"):
        load_dataset("cifar10", root, download=False)
    assert not marker.exists()
    # the same payload through plain pickle would have run: the test's payload is real
    pickle.loads(pickle.dumps(_RunsCode(marker)))
    assert marker.exists()


def test_cifar_labels_out_of_range_are_named(tmp_path: Path) -> None:
    root = tmp_path / "cifar10"
    _cifar_batches(root / "cifar-10-batches-py", labels=[0, 1, 2, 12])
    with pytest.raises(DataError, match="outside the 10 classes"):
        load_dataset("cifar10", root, download=False)


def test_idx_labels_out_of_range_are_named(tmp_path: Path) -> None:
    def idx(array: np.ndarray) -> bytes:
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        return header + array.astype(np.uint8).tobytes()

    root = tmp_path / "fmnist"
    root.mkdir()
    images = np.zeros((4, 28, 28), np.uint8)
    for prefix, labels in (("train", [0, 1, 2, 11]), ("t10k", [0, 1, 2, 3])):
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(idx(images))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(idx(np.array(labels)))
    with pytest.raises(DataError, match="labels outside 0-9"):
        load_dataset("fashion-mnist", root, download=False)


