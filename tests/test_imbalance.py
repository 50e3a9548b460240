"""Imbalanced data: class-weighted loss and a class-balanced sampler, checked against hand computation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resnets.data import DataBundle, make_loader
from resnets.data.bundle import TensorSplit
from resnets.data.loader import balanced_class_weights
from resnets.train import TrainConfig, fit
from resnets.train.step import classification_loss

CIFAR = Path(__file__).parent / "fixtures" / "cifar10"


def skewed_bundle(n0: int = 90, n1: int = 10) -> DataBundle:
    labels = torch.tensor([0] * n0 + [1] * n1)
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    split = TensorSplit(images, labels)
    return DataBundle("skewed", ["a", "b"], 1, (4, 4), (0.0,), (1.0,), train=split, test=split)


def test_balanced_class_weights_are_n_over_k_times_count() -> None:
    weights = balanced_class_weights(skewed_bundle().train, 2)
    assert torch.allclose(weights, torch.tensor([100 / (2 * 90), 100 / (2 * 10)]))


def test_weighted_loss_is_the_weighted_mean_of_the_per_image_losses() -> None:
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    w = torch.tensor([0.5, 1.0, 3.0])
    per_image = F.cross_entropy(logits, y, reduction="none")
    expected = (w[y] * per_image).sum() / w[y].sum()
    assert torch.allclose(classification_loss(logits, y, class_weight=w), expected)


def test_balanced_sampler_draws_classes_equally_seeded_and_sharded() -> None:
    bundle = skewed_bundle()

    def epoch_labels(epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        loader = make_loader(bundle, "train", 10, train=True, balanced=True, epoch=epoch, seed=3, rank=rank,
                             world_size=world, drop_last=False)  # fmt: skip
        return torch.cat([y for _, y in loader])

    draws = torch.cat([epoch_labels(e) for e in range(10)])  # 1000 draws from a 90:10 set
    assert 0.4 < draws.float().mean() < 0.6, "class b should be about half of the draws"
    assert torch.equal(epoch_labels(0), epoch_labels(0)) and not torch.equal(epoch_labels(0), epoch_labels(1))
    plain = make_loader(bundle, "train", 10, train=True, seed=3, drop_last=False)
    assert torch.cat([y for _, y in plain]).float().mean() == pytest.approx(0.1)  # the default is unchanged
    whole = epoch_labels(0)
    shards = [epoch_labels(0, rank, 2) for rank in range(2)]
    assert torch.equal(shards[0], whole[0::2]) and torch.equal(shards[1], whole[1::2])


def test_imbalanced_folder_trains_with_weights_and_sampler(tmp_path: Path) -> None:
    """A 5:1 folder (cat:dog): both options run end to end and change what is trained on."""
    root = tmp_path / "skewed"
    for split in ("train", "test"):
        shutil.copytree(CIFAR / split / "cat", root / split / "cat")
        dogs = sorted((CIFAR / split / "dog").iterdir())
        (root / split / "dog").mkdir(parents=True)
        for image in dogs[: max(1, len(dogs) // 5)]:
            shutil.copy(image, root / split / "dog" / image.name)
    losses = {}
    for name, options in {"plain": {}, "weights": {"class_weights": "balanced"},
                          "sampler": {"sampler": "balanced"}}.items():  # fmt: skip
        history = fit(TrainConfig(data=f"folder:{root}", image_size=16, epochs=1, batch_size=4, workers=0,
                                  quiet=True, out=str(tmp_path / name), **options))  # fmt: skip
        losses[name] = history.epochs[0]["train_loss"]
        assert "Test sensitivity" in (tmp_path / name / "report.md").read_text()
    assert len(set(losses.values())) == 3, losses
