"""The loaded-data containers (DataBundle, TensorSplit) and the index helpers shared by every source."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from resnets.data.folder import Dropped, FolderSplit, eval_resize

# ITU-R 601 luma weights, the same ones torchvision uses for RGB -> gray.
LUMA = (0.299, 0.587, 0.114)


@dataclass
class TensorSplit:
    """A split small enough to hold in memory as uint8 (N, C, H, W) images and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor
    _on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def on(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (images, labels) on `device`, copying them there once and caching the copy."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        if key not in self._on_device:
            if key == "cpu":
                self._on_device[key] = (self.images, self.labels)
            else:
                self._on_device[key] = (self.images.to(device), self.labels.to(device))
        return self._on_device[key]

    def subset(self, index: Sequence[int] | torch.Tensor) -> TensorSplit:
        """Return a new split holding only the rows in `index`."""
        index = torch.as_tensor(index, dtype=torch.long)
        return TensorSplit(self.images[index], self.labels[index])


Split = TensorSplit | FolderSplit


@dataclass
class DataBundle:
    """Everything a training run needs to know about a data set: its splits, classes and input format."""

    name: str
    classes: list[str]
    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Split
    test: Split  # reported, never selected on
    val: Split | None = None  # selects checkpoints, thresholds, early stopping; None: nothing is selected
    dropped: list[Dropped] = field(default_factory=list)  # images left out (corrupt, truncated) and why
    source: Path | None = None
    roles: str = ""  # what each split is for, in words: a run states it in its first line

    @property
    def skipped(self) -> int:
        """How many images were left out."""
        return len(self.dropped)

    def split(self, name: str) -> Split:
        """The split called `name` ("train", "val" or "test"), or a ValueError saying it is missing."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        found = getattr(self, name)
        if found is None:
            raise ValueError(f"{self.name} has no validation split: use a val/ folder or --val-split F")
        return found

    def evaluated_at(self, factor: float) -> DataBundle:
        """The same bundle whose image folders are evaluated with the short side resized to `factor` x the
        image size before the centre crop (1: the whole centre square, as fastai); in-memory sets are unchanged."""
        splits = {name: replace(split, eval_factor=factor) for name in ("train", "val", "test")
                  if isinstance(split := getattr(self, name), FolderSplit)}  # fmt: skip
        return replace(self, **splits)

    @property
    def eval_resize(self) -> int:
        """The short side images are resized to before the evaluation crop: streamed folders resize, then
        centre-crop (as torchvision's weights); in-memory sets are used whole, resized to the input size."""
        if isinstance(self.test, FolderSplit):
            return eval_resize(self.image_size, self.test.eval_factor)
        return max(self.image_size)

    @property
    def num_classes(self) -> int:
        """Number of classes, i.e. the width of the classifier head."""
        return len(self.classes)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) images to `channels` (1 or 3): repeat gray, or take RGB luma."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        weights = torch.tensor(LUMA).view(1, 3, 1, 1)
        gray = (images.float() * weights).sum(dim=1, keepdim=True)
        return gray.round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def convert_stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Adapt per-channel mean or std to `channels` (luma-weighted for gray; an approximation for std)."""
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    return (sum(w * v for w, v in zip(LUMA, values, strict=True)),)


def balanced_subset(labels: Sequence[int], limit: int) -> list[int]:
    """Pick at most `limit` indices, as evenly spread over classes as possible, deterministically (in order)."""
    if limit >= len(labels):
        return list(range(len(labels)))
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    quota = limit // len(by_class)
    chosen = [i for members in by_class.values() for i in members[:quota]]
    # Fill what the per-class quota left over, taking the remaining images round-robin over classes.
    rest = [members[quota:] for members in by_class.values()]
    rank = 0
    while len(chosen) < limit:
        for members in rest:
            if rank < len(members) and len(chosen) < limit:
                chosen.append(members[rank])
        rank += 1
    return sorted(chosen)


def stratified_split(labels: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split indices into (train, val) with about `fraction` of every class in val, reproducibly."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_split must be between 0 and 1, got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    train: list[int] = []
    val: list[int] = []
    for members in by_class.values():
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = min(max(round(len(members) * fraction), 1 if len(members) > 1 else 0), len(members) - 1)
        val += [members[j] for j in order[:n_val]]
        train += [members[j] for j in order[n_val:]]
    return sorted(train), sorted(val)
