"""Tests for resnets.data: loading the real-data fixtures, loaders, augmentation and error handling."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnets.data.readers
import resnets.data.sources
from resnets.data import (
    AugmentConfig,
    DataBundle,
    DataError,
    FolderSplit,
    TensorSplit,
    crop_flip,
    cutout,
    load_dataset,
    make_loader,
    mixup,
)
from resnets.data.augment import DISTORT_P, Distortion, distort, draw_distortion, warp_grid
from resnets.data.folder import random_resized_crop_box
from resnets.train import TrainConfig

FIXTURES = Path(__file__).parent / "fixtures"
FASHION = FIXTURES / "fashion-mnist"
CIFAR = FIXTURES / "cifar10"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test off the real cache and data folders."""
    monkeypatch.delenv("RESNETS_DATA", raising=False)
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def fashion() -> DataBundle:
    return load_dataset("fashion-mnist", FASHION)


def indexed_bundle(n: int) -> DataBundle:
    """A tiny in-memory bundle whose labels are the sample indices, to track where every sample goes."""
    images = torch.randint(
        0, 256, (n, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    split = TensorSplit(images, torch.arange(n))
    return DataBundle("indexed", [str(i) for i in range(n)], 3, (8, 8), (0.5,) * 3, (0.25,) * 3, split, split)


def labels_of(loader) -> list[int]:
    return [int(v) for _, y in loader for v in y]


def copy_cifar(tmp_path: Path) -> Path:
    target = tmp_path / "cifar10"
    shutil.copytree(CIFAR, target)
    return target


# --- loading ---------------------------------------------------------------------------------------------


def test_fashion_from_root(fashion: DataBundle) -> None:
    assert fashion.name == "fashion-mnist" and fashion.channels == 1 and fashion.image_size == (28, 28)
    assert len(fashion.classes) == 10 and fashion.classes[0] == "T-shirt/top"
    assert fashion.train.images.shape == (4000, 1, 28, 28) and fashion.train.images.dtype == torch.uint8
    assert fashion.test.images.shape == (1000, 1, 28, 28)
    assert fashion.train.labels.dtype == torch.int64
    assert torch.bincount(fashion.train.labels).tolist() == [400] * 10
    assert torch.bincount(fashion.test.labels).tolist() == [100] * 10
    assert fashion.mean == (0.2860,) and fashion.std == (0.3530,) and fashion.skipped == 0


@pytest.mark.parametrize("env_points_at", [FIXTURES, FASHION])
def test_fashion_from_env(monkeypatch: pytest.MonkeyPatch, env_points_at: Path) -> None:
    monkeypatch.setenv("RESNETS_DATA", str(env_points_at))
    bundle = load_dataset("fashion-mnist", download=False)
    assert bundle.source == FASHION and len(bundle.train) == 4000


def test_fashion_not_found_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resnets.data.sources, "DEBIAN_FASHION", tmp_path / "nowhere")
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", download=False)


def test_fashion_limit_val_split_and_channels() -> None:
    limited = load_dataset("fashion-mnist", FASHION, limit=105)
    assert len(limited.train) == 105
    assert torch.bincount(limited.train.labels).min() == 10
    held_out = load_dataset("fashion-mnist", FASHION, val_split=0.1)  # validation from train; test stays
    assert (len(held_out.train), len(held_out.val), len(held_out.test)) == (3600, 400, 1000)
    assert torch.bincount(held_out.val.labels).tolist() == [40] * 10
    rgb = load_dataset("fashion-mnist", FASHION, channels=3, limit=20)
    assert rgb.channels == 3 and rgb.train.images.shape[1] == 3 and len(rgb.mean) == 3
    assert torch.equal(rgb.train.images[:, 0], rgb.train.images[:, 2])


def test_unknown_name_and_bad_arguments() -> None:
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="channels"):
        load_dataset("fashion-mnist", FASHION, channels=2)


def test_cifar_png_tree_and_cache(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sorted(p for p in CIFAR.rglob("*"))
    bundle = load_dataset("cifar10", CIFAR)
    assert bundle.classes[0] == "airplane" and bundle.channels == 3 and bundle.image_size == (32, 32)
    assert bundle.train.images.shape == (200, 3, 32, 32) and len(bundle.test) == 50
    assert bundle.mean == (0.4914, 0.4822, 0.4465)
    assert len(list((isolated_env / "decoded").glob("*.npz"))) == 1
    assert sorted(p for p in CIFAR.rglob("*")) == before  # nothing written into the source

    def no_decoding(*args: object) -> None:
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(resnets.data.readers, "_decode_png_tree", no_decoding)
    again = load_dataset("cifar10", CIFAR)
    assert torch.equal(again.train.images, bundle.train.images)
    gray = load_dataset("cifar10", CIFAR, channels=1)
    assert gray.train.images.shape == (200, 1, 32, 32) and len(gray.mean) == 1


def test_crop_scale_sets_the_smallest_random_resized_crop() -> None:
    """--crop-scale: at fastai's 0.5 no crop falls under half the area, at Inception's 0.08 (the default)
    crops reach far smaller; at 1.0 a square image's training crop is the whole image, unchanged."""
    areas = {}
    for scale in (0.5, 0.08):
        generator = torch.Generator().manual_seed(0)
        boxes = [random_resized_crop_box(100, 100, generator, scale) for _ in range(300)]
        areas[scale] = [h * w / 100**2 for _, _, h, w in boxes]
    assert min(areas[0.5]) >= 0.49 and min(areas[0.08]) < 0.2
    assert TrainConfig(crop_scale=0.5).augment().crop_scale == 0.5
    split = load_dataset(f"folder:{CIFAR}", image_size=32).train  # 32 px PNGs in train/ and test/
    raw = [
        torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
        for p, _ in split.samples[:10]
    ]
    for scale, same in ((1.0, 10), (0.08, 0)):
        view = split.view(train=True, flip=False, crop_scale=scale)
        assert sum(torch.equal(view[i][0], raw[i]) for i in range(10)) == same, scale
    with pytest.raises(ValueError, match="crop_scale is a fraction"):
        TrainConfig(crop_scale=0.0).validate()


def test_crop_ratio_one_gives_square_crops() -> None:
    """--crop-ratio 1 (fastai's aug_transforms): every random-resized crop is square (to rounding); the default
    4/3 gives crops as wide as 4:3 and as tall as 3:4."""
    for ratio, low, high in ((1.0, 0.98, 1.02), (4 / 3, 0.7, 1.4)):
        generator = torch.Generator().manual_seed(0)
        shapes = [random_resized_crop_box(200, 300, generator, 0.5, ratio)[2:] for _ in range(300)]
        ratios = [w / h for h, w in shapes]
        assert low <= min(ratios) and max(ratios) <= high, ratio
        if ratio > 1:
            assert min(ratios) < 0.8 and max(ratios) > 1.25
    with pytest.raises(ValueError, match="crop_ratio is the widest"):
        TrainConfig(crop_ratio=0.5).validate()


def blob(h: int, w: int, x: float, y: float) -> torch.Tensor:
    """A (1, 1, h, w) image holding one small Gaussian spot centred at pixel (x, y)."""
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    return torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 3)[None, None]


def spot(image: torch.Tensor) -> tuple[float, float]:
    """The (x, y) centroid of a spot image."""
    m = image[0, 0]
    yy, xx = torch.meshgrid(torch.arange(m.shape[0]).float(), torch.arange(m.shape[1]).float(), indexing="ij")
    return float((m * xx).sum() / m.sum()), float((m * yy).sum() / m.sum())


def one(
    angle: float = 0.0, scale: float = 1.0, centre=(0.5, 0.5), warp=(0.0, 0.0), brightness=0.5, contrast=1.0
):
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    return Distortion(
        t(angle), t(scale), torch.tensor([centre]), torch.tensor([warp]), t(brightness), t(contrast)
    )


def test_rotation_and_zoom_move_a_spot_where_geometry_says() -> None:
    """A spot at (x, y) from the centre of a 41 x 61 image: rotated by 30 degrees it turns about the centre
    (in pixels, the image's aspect kept), zoomed 1.5x about the centre it moves 1.5x as far out; zoomed
    about the top-left corner (centre (0, 0)), the corner stays and the spot moves away from it."""
    h, w, cx, cy = 41, 61, 30.0, 20.0
    x, y = 8.0, -5.0  # px from the centre
    image = blob(h, w, cx + x, cy + y)
    turned = spot(distort(image, one(angle=30)))
    a = math.radians(30)
    assert turned == pytest.approx(
        (cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a)), abs=0.05
    )
    assert spot(distort(image, one(scale=1.5))) == pytest.approx((cx + 1.5 * x, cy + 1.5 * y), abs=0.05)
    corner = spot(distort(blob(h, w, 10, 8), one(scale=1.5, centre=(0.0, 0.0))))
    assert corner == pytest.approx((15, 12), abs=0.05)
    # neutral draws leave the image as it was (to the logit's clamp at 1e-7)
    assert torch.allclose(distort(image, one()), image, atol=1e-6)


def test_warp_sends_the_moved_corners_to_the_image_corners() -> None:
    """fastai's Warp: with magnitudes (dx, dy) the output's points at the corners moved as fastai moves them
    (the y magnitude shifts corners along x, the x magnitude along y) sample the input's corners; straight
    lines stay straight (a projective map), and zero magnitudes change nothing."""
    dx, dy = 0.2, -0.1
    corners = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    moved = torch.tensor([[-1 - dy, -1 - dx], [-1 + dy, 1 + dx], [1 + dy, -1 + dx], [1 - dy, 1 - dx]])
    sampled = warp_grid(moved.view(1, 2, 2, 2), torch.tensor([[dx, dy]])).view(4, 2)
    assert torch.allclose(sampled, corners, atol=1e-5)
    line = torch.stack([torch.linspace(-1, 1, 9), torch.full((9,), 0.3)], -1).view(1, 1, 9, 2)
    out = warp_grid(line, torch.tensor([[dx, dy]])).view(9, 2)
    steps = out[1:] - out[:-1]
    cross = steps[:-1, 0] * steps[1:, 1] - steps[:-1, 1] * steps[1:, 0]
    assert cross.abs().max() < 1e-5
    assert torch.allclose(warp_grid(line, torch.zeros(1, 2)), line)
    grid = torch.stack(
        torch.meshgrid(torch.linspace(-1, 1, 17), torch.linspace(-1, 1, 17), indexing="xy"), -1
    )
    corners_out = torch.tensor([[0.2, 0.2], [-0.2, -0.2], [0.2, -0.2], [-0.2, 0.2]])  # fastai's largest draws
    assert float(warp_grid(grid.expand(4, 17, 17, 2), corners_out).abs().max()) < 1.6  # no point sent far off


def test_lighting_moves_mid_grey_to_the_drawn_brightness_and_keeps_order() -> None:
    """fastai's lighting works on logits, brightness first: mid-grey becomes the drawn brightness (contrast 1),
    stays mid-grey under any contrast (brightness 0.5), and under both lands at sigmoid(c * logit(b));
    contrast > 1 spreads values away from mid-grey, < 1 pulls them in; the order of values never changes."""
    ramp = torch.linspace(0.05, 0.95, 19).view(1, 1, 1, 19)
    both = 1 / (1 + math.exp(-1.25 * math.log(0.4 / 0.6)))
    for brightness, contrast, grey in ((0.6, 1.0, 0.6), (0.5, 1.25, 0.5), (0.5, 0.8, 0.5), (0.4, 1.25, both)):
        out = distort(ramp, one(brightness=brightness, contrast=contrast))
        assert float(out[0, 0, 0, 9]) == pytest.approx(grey, abs=1e-5)
        assert bool((out.diff(dim=-1) > 0).all())
    spread = distort(ramp, one(contrast=1.25))
    assert float(spread.max() - spread.min()) > 0.9 + 1e-3
    assert float(distort(ramp, one(contrast=0.8)).std()) < float(ramp.std())


def test_distortion_draws_follow_fastai_ranges_and_probability() -> None:
    """Each distortion is drawn within its bound and applied to about 3 images in 4 (fastai's p_affine and
    p_lighting); off settings draw only neutral values, and then nothing is distorted."""
    n = 4000
    d = draw_distortion(
        n, AugmentConfig(rotate=10, zoom=1.1, warp=0.2, lighting=0.2), torch.Generator().manual_seed(0)
    )
    for values, neutral, low, high in ((d.angle, 0, -10, 10), (d.scale, 1, 1, 1.1), (d.warp[:, 0], 0, -0.2, 0.2),
                                       (d.warp[:, 1], 0, -0.2, 0.2), (d.brightness, 0.5, 0.4, 0.6),
                                       (d.contrast, 1, 0.8, 1.25)):  # fmt: skip
        assert low - 1e-6 <= float(values.min()) and float(values.max()) <= high + 1e-6
        assert abs(float((values != neutral).float().mean()) - DISTORT_P) < 0.03
    off = draw_distortion(50, AugmentConfig(), torch.Generator().manual_seed(0))
    assert not AugmentConfig().distorts
    assert bool((off.angle == 0).all() and (off.scale == 1).all() and (off.warp == 0).all())
    assert bool((off.brightness == 0.5).all() and (off.contrast == 1).all())
    with pytest.raises(ValueError, match="rotate is the largest angle"):
        TrainConfig(rotate=-1.0).validate()
    with pytest.raises(ValueError, match="zoom is the largest zoom"):
        TrainConfig(zoom=0.9).validate()
    with pytest.raises(ValueError, match=r"warp is a fraction of the half side in \[0, 0.4\]"):
        TrainConfig(warp=0.5).validate()


def test_distortions_change_training_batches_only() -> None:
    """Through the loader on image folders: fastai's distortions change most training images (the same
    seed, epoch and crops otherwise), and leave evaluation batches exactly as they were."""
    bundle = load_dataset(f"folder:{CIFAR}", image_size=32)
    batches = {}
    for name, cfg in (
        ("plain", TrainConfig(flip=False)),
        ("fastai", TrainConfig(flip=False, rotate=10, zoom=1.1, warp=0.2, lighting=0.2)),
    ):
        train = make_loader(bundle, "train", 50, train=True, augment=cfg.augment(), workers=0, seed=3)
        test = make_loader(bundle, "test", 50, train=False, augment=cfg.augment(), workers=0, seed=3)
        batches[name] = (next(iter(train))[0], next(iter(test))[0])
    changed = (batches["plain"][0] - batches["fastai"][0]).abs().flatten(1).amax(1) > 1e-3
    assert 0.8 < float(changed.float().mean()) <= 1.0  # untouched only when all six draws are neutral
    assert torch.equal(batches["plain"][1], batches["fastai"][1])


def test_folder_with_val_split() -> None:
    """Class folders only: 20% held out for test (4 of 20 per class), then 20% of the rest for validation."""
    with pytest.warns(UserWarning, match="too few to select"):
        bundle = load_dataset(f"folder:{CIFAR / 'train'}", val_split=0.2, image_size=40)
    assert isinstance(bundle.train, FolderSplit) and len(bundle.classes) == 10
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (130, 30, 40)
    assert sorted(bundle.test.targets) == [c for c in range(10) for _ in range(4)]
    splits = [{p for p, _ in split.samples} for split in (bundle.train, bundle.val, bundle.test)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert bundle.mean == (0.485, 0.456, 0.406) and bundle.image_size == (40, 40)
    image, label = bundle.test[0]
    assert image.shape == (3, 40, 40) and image.dtype == torch.uint8 and isinstance(label, int)


def test_folder_train_test_layout_and_rgb_to_gray() -> None:
    bundle = load_dataset(f"folder:{CIFAR}", channels=1, image_size=32, limit=30)
    assert (len(bundle.train), len(bundle.test), bundle.channels) == (30, 50, 1)
    x, y = next(iter(make_loader(bundle, "test", 8, train=False, workers=0)))
    assert x.shape == (8, 1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_gray_images_for_rgb_model(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "gray" / cls).mkdir(parents=True)
        for i in range(3):
            gray = torch.randint(0, 256, (1, 20, 20), dtype=torch.uint8)
            Image.fromarray(gray[0].numpy()).save(tmp_path / "gray" / cls / f"{i}.png")
    bundle = load_dataset(f"folder:{tmp_path / 'gray'}", val_split=0.34, image_size=16)
    image, _ = bundle.train[0]
    assert image.shape == (3, 16, 16) and torch.equal(image[0], image[1])


def test_corrupt_images_skipped_or_strict(tmp_path: Path) -> None:
    root = copy_cifar(tmp_path)
    (root / "train" / "cat" / "garbage.png").write_bytes(os.urandom(500))
    truncated = next((root / "train" / "dog").glob("*.png"))
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.warns(UserWarning, match="skipped 2 corrupt"):
        bundle = load_dataset(f"folder:{root}", image_size=32)
    assert bundle.skipped == 2 and len(bundle.train) == 199
    with pytest.warns(UserWarning, match="skipped 2 corrupt"):
        assert load_dataset("cifar10", root).skipped == 2
    with pytest.raises(DataError, match="corrupt"):
        load_dataset(f"folder:{root}", strict=True)
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("cifar10", root, strict=True)


def test_layout_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match=str(missing)):
        load_dataset(f"folder:{missing}", val_split=0.2)
    with pytest.raises(DataError, match=str(missing)):
        load_dataset("fashion-mnist", missing)
    root = copy_cifar(tmp_path)
    empty = root / "train" / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=str(empty)):
        load_dataset(f"folder:{root}")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset(f"folder:{tmp_path / 'flat'}", val_split=0.2)
    with pytest.raises(DataError, match="val_split"):
        load_dataset(f"folder:{CIFAR / 'train'}")


# --- loaders ---------------------------------------------------------------------------------------------


def test_loader_shapes_len_and_normalisation(fashion: DataBundle) -> None:
    loader = make_loader(fashion, "train", 256, train=True)
    assert len(loader) == 4000 // 256
    batches = list(loader)
    assert len(batches) == len(loader)
    x, y = batches[0]
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    everything = torch.cat([x for x, _ in make_loader(fashion, "test", 300, train=False)])
    assert everything.shape[0] == 1000 and len(make_loader(fashion, "test", 300, train=False)) == 4
    assert abs(everything.mean().item()) < 0.1 and abs(everything.std().item() - 1) < 0.1
    assert everything.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-5)


def test_loader_resizes_and_channels_last(fashion: DataBundle) -> None:
    bundle = load_dataset("fashion-mnist", FASHION, channels=3, image_size=32, limit=64)
    x, _ = next(iter(make_loader(bundle, "train", 16, train=True, channels_last=True)))
    assert x.shape == (16, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)


def test_loader_deterministic_per_seed_epoch_rank(fashion: DataBundle) -> None:
    def first(**kw: int) -> tuple[torch.Tensor, torch.Tensor]:
        return next(
            iter(make_loader(fashion, "train", 64, train=True, augment=AugmentConfig(cutout=8), **kw))
        )

    x0, y0 = first(epoch=0)
    x0b, y0b = first(epoch=0)
    assert torch.equal(x0, x0b) and torch.equal(y0, y0b)
    x1, y1 = first(epoch=1)
    assert not torch.equal(y0, y1)
    xr, yr = first(epoch=0, rank=1, world_size=2)
    assert not torch.equal(y0, yr)
    assert not torch.equal(first(seed=1)[1], y0)


def test_rank_shards_are_disjoint_and_cover() -> None:
    bundle = indexed_bundle(100)
    shards = [
        labels_of(make_loader(bundle, "train", 8, train=True, rank=r, world_size=2, drop_last=False, epoch=3))
        for r in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == 50
    assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) == set(range(100))
    odd = indexed_bundle(101)
    lengths = [len(make_loader(odd, "train", 10, train=True, rank=r, world_size=2)) for r in (0, 1)]
    assert lengths[0] == lengths[1] == 5
    assert sorted(labels_of(make_loader(bundle, "test", 32, train=False))) == list(range(100))


def test_augmentation_changes_images_not_labels(fashion: DataBundle) -> None:
    plain = make_loader(fashion, "train", 128, train=True, epoch=2)
    augmented = make_loader(fashion, "train", 128, train=True, epoch=2, augment=AugmentConfig(cutout=6))
    (x, y), (xa, ya) = next(iter(plain)), next(iter(augmented))
    assert torch.equal(y, ya) and xa.shape == x.shape
    changed = (xa != x).flatten(1).any(1).float().mean().item()
    assert changed > 0.9


def test_flip_is_exact_mirror() -> None:
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = crop_flip(x, 0, True, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


def test_random_crop_shifts_with_padding() -> None:
    x = torch.arange(36, dtype=torch.uint8).view(1, 1, 6, 6).repeat(32, 1, 1, 1)
    for mode in ("zero", "reflect"):
        out = crop_flip(x, 2, False, torch.Generator().manual_seed(1), mode)
        assert out.shape == x.shape and out.dtype == torch.uint8
        assert (out != x).flatten(1).any(1).sum() > 16
    zero = crop_flip(x + 1, 2, False, torch.Generator().manual_seed(1))
    assert (zero == 0).any()  # zero padding shows up at the borders


def test_cutout_zeros_a_square() -> None:
    out = cutout(torch.ones(16, 3, 12, 12), 4, torch.Generator().manual_seed(0))
    for image in out:
        holes = (image == 0).nonzero()
        assert 0 < len(holes) <= 3 * 16
        assert bool((image[0] == 0).eq(image[2] == 0).all())
        assert holes[:, 1].max() - holes[:, 1].min() < 4 and holes[:, 2].max() - holes[:, 2].min() < 4


def test_mixup() -> None:
    x, y = torch.randn(32, 3, 4, 4), torch.arange(32)
    mixed, y_a, y_b, lam = mixup(x, y, 0.4, torch.Generator().manual_seed(0))
    assert 0 <= lam <= 1 and torch.equal(y_a, y) and sorted(y_b.tolist()) == y.tolist()
    assert torch.allclose(mixed, lam * x + (1 - lam) * x[y_b])


def test_folder_loader_deterministic_and_sharded() -> None:
    bundle = load_dataset(f"folder:{CIFAR}", image_size=24)

    def run(**kw: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(make_loader(bundle, "train", 32, train=True, augment=AugmentConfig(), workers=0, **kw))

    first, again = run(epoch=1), run(epoch=1)
    assert len(first) == 200 // 32 and first[0][0].shape == (32, 3, 24, 24)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0][0], run(epoch=2)[0][0])
    halves = [make_loader(bundle, "test", 5, train=False, rank=r, world_size=2, workers=0) for r in (0, 1)]
    assert len(halves[0]) == len(halves[1]) == 5


@pytest.mark.slow
def test_full_shared_cifar10() -> None:
    shared = os.environ.get("RESNETS_SHARED_DATA")
    if not shared:
        pytest.skip("set RESNETS_SHARED_DATA to the folder holding cifar10/")
    bundle = load_dataset("cifar10", Path(shared) / "cifar10")
    assert bundle.train.images.shape == (50000, 3, 32, 32) and len(bundle.test) == 10000
    assert torch.bincount(bundle.train.labels).tolist() == [5000] * 10
