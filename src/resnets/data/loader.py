"""make_loader: reproducible, rank-sharded batches of normalised float images on the target device."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from resnets.data.augment import AugmentConfig, crop_flip, cutout, distort, draw_distortion
from resnets.data.bundle import DataBundle, TensorSplit
from resnets.data.folder import FolderSplit
from resnets.data.seeds import mix_seed


def split_labels(split: TensorSplit | FolderSplit) -> torch.Tensor:
    """Every label of a split, as an int64 tensor."""
    return split.labels if isinstance(split, TensorSplit) else torch.tensor(split.targets, dtype=torch.long)


def balanced_weights(split: TensorSplit | FolderSplit) -> torch.Tensor:
    """A sampling weight per image, 1 / (images of its class), so every class is drawn equally often."""
    labels = split_labels(split)
    return 1.0 / torch.bincount(labels).double()[labels]


def balanced_class_weights(split: TensorSplit | FolderSplit, num_classes: int) -> torch.Tensor:
    """Loss weights n / (k * n_c) (scikit-learn's "balanced"), so every class adds the same total weight."""
    counts = torch.bincount(split_labels(split), minlength=num_classes).double()
    if (counts == 0).any():
        raise ValueError("--class-weights balanced needs training images of every class")
    return (counts.sum() / (num_classes * counts)).float()


class BatchLoader:
    """Iterable of (x, y) batches: x float32 normalised (N, C, H, W) on the device, y int64 labels."""

    def __init__(
        self,
        bundle: DataBundle,
        split: str,
        batch_size: int,
        *,
        train: bool,
        augment: AugmentConfig | None,
        device: torch.device | str,
        seed: int,
        epoch: int,
        rank: int,
        world_size: int,
        workers: int,
        drop_last: bool | None,
        channels_last: bool,
        balanced: bool = False,
        size: tuple[int, int] | None = None,
    ) -> None:
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}"
            )
        self.bundle, self.batch_size, self.train = bundle, batch_size, train
        self.augment = augment if train else None
        self.device = torch.device(device)
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self.balanced = balanced
        self.size = tuple(size or bundle.image_size)
        self.split = bundle.split(split)
        shape = (len(bundle.mean), 1, 1)
        self._mean = torch.tensor(bundle.mean, device=self.device).view(shape)
        self._std = torch.tensor(bundle.std, device=self.device).view(shape)
        if isinstance(self.split, TensorSplit):
            self._indices = self._shard()
            self._loader = None
        else:
            self._loader = self._folder_loader(workers)

    def __len__(self) -> int:
        if self._loader is not None:
            return len(self._loader)
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(len(self._indices) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(self.device).manual_seed(mix_seed(self.seed, self.epoch, self.rank))
        for x, y in self._loader if self._loader is not None else self._tensor_batches(generator):
            yield self._finish(
                x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True), generator
            )

    def _shard(self) -> torch.Tensor:
        """This rank's indices: the epoch's permutation (same on every rank), padded to equal shards. With
        `balanced`, the epoch is drawn with replacement, each class equally likely (seeded, so every rank
        draws the same list and takes its own disjoint stride of it)."""
        n = len(self.split)
        epoch_rng = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        if self.train and self.balanced:
            order = torch.multinomial(balanced_weights(self.split), n, replacement=True, generator=epoch_rng)
        elif self.train:
            order = torch.randperm(n, generator=epoch_rng)
        else:
            order = torch.arange(n)
        total = math.ceil(n / self.world_size) * self.world_size
        order = order.repeat(math.ceil(total / n))[:total]  # repeat a few samples so all shards are equal
        return order[self.rank :: self.world_size]

    def _tensor_batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.split.on(self.device)
        indices = self._indices.to(self.device)
        aug = self.augment
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = indices[start : start + self.batch_size]
            x = images[index]
            if aug is not None and (aug.crop_padding or aug.flip):
                x = crop_flip(x, aug.crop_padding, aug.flip, generator, aug.pad_mode)
            yield x, labels[index]

    def _folder_loader(self, workers: int) -> DataLoader:
        aug = self.augment
        crops = aug or AugmentConfig()
        view = self.split.view(train=aug is not None, flip=aug is not None and aug.flip, seed=mix_seed(self.seed, self.epoch),
                               crop_scale=crops.crop_scale, crop_ratio=crops.crop_ratio)  # fmt: skip
        if self.train and self.balanced:
            sampler = self._shard().tolist()  # the same seeded, class-balanced draw as in-memory sets
        else:
            sampler = DistributedSampler(
                view, num_replicas=self.world_size, rank=self.rank, shuffle=self.train, seed=self.seed
            )
            sampler.set_epoch(self.epoch)
        return DataLoader(
            view,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=self.drop_last,
        )

    def _finish(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Distort uint8 images (fastai's rotations, zoom, warps, lighting, if asked), normalise them, resize
        to `size` if needed, apply cutout, set the memory format."""
        x = x.float() / 255
        if self.augment is not None and self.augment.distorts:
            x = distort(x, draw_distortion(len(x), self.augment, generator))
        x = (x - self._mean) / self._std
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        if self.augment is not None and self.augment.cutout:
            x = cutout(x, self.augment.cutout, generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def make_loader(
    bundle: DataBundle,
    split: str,
    batch_size: int,
    *,
    train: bool,
    augment: AugmentConfig | None = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
    epoch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 2,
    drop_last: bool | None = None,
    channels_last: bool = False,
    balanced: bool = False,
    size: tuple[int, int] | None = None,
) -> BatchLoader:
    """Make one epoch's batches of `split` ("train", "val" or "test"); same (seed, epoch, rank) gives the same batches.

    `train` shuffles (one permutation per (seed, epoch), shared by all ranks, each rank taking its own
    shard) and defaults `drop_last` to True. `augment` applies only when `train` is set; None means no
    augmentation. In-memory sets are augmented per batch on the device; folder sets get a random-resized
    crop and flip per image in the workers (`crop_padding` and `pad_mode` are for in-memory sets); fastai's
    distortions (rotate, zoom, warp, lighting) and cutout apply to both, per batch on the device.
    `workers` is used by folder sets only. `balanced` (training only) draws each epoch with replacement so
    that every class is equally likely (--sampler balanced). `size` resizes the batches (after augmentation)
    to another (H, W) than the bundle's: progressive resizing trains its first epochs smaller.
    """
    return BatchLoader(
        bundle,
        split,
        batch_size,
        train=train,
        augment=augment,
        device=device,
        seed=seed,
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        workers=workers,
        drop_last=drop_last,
        channels_last=channels_last,
        balanced=balanced,
        size=size,
    )


def steps_per_epoch(images: int, batch_size: int, world_size: int = 1) -> int:
    """Training steps in an epoch of `images`, per process: each gets an equal shard (padded, as
    `BatchLoader` and DistributedSampler deal them) and trains on full batches only."""
    return math.ceil(images / world_size) // batch_size
