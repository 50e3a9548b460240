"""Using a trained model: find its weights from a run folder or file, rebuild it, and predict on images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as TF

from .data.bundle import convert_stats
from .data.folder import read_image
from .data.load import IMAGENET_STATS
from .deploy import prepare_for_inference
from .models import ResNet, create_model
from .train.checkpoint import read_meta


@dataclass
class Trained:
    """A model rebuilt from a weights file, with what is needed to feed it: classes and input format."""

    model: ResNet
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int]
    path: Path


def resolve_weights(path: str | Path) -> Path:
    """A run folder means its best.safetensors; a file means itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: give a run folder (with best.safetensors) or a weights file"
        )
    return path


def load_trained(
    path: str | Path, model: str | None = None, num_classes: int | None = None, in_channels: int | None = None
) -> Trained:
    """Rebuild the model a run trained. Our .safetensors carry their model name, classes and input format;
    for foreign weights give `model` (and `num_classes`, `in_channels` when not the file's own)."""
    path = resolve_weights(path)
    meta = read_meta(path)
    name = model or meta.get("model")
    if name is None:
        raise ValueError(f"{path} does not say which model it holds: pass --model NAME")
    n = num_classes or meta.get("num_classes")
    channels = in_channels or meta.get("in_channels", 3)
    net = create_model(name, num_classes=n, in_channels=channels, weights=path, shortcut=meta.get("shortcut"),
                       spec_overrides=meta.get("spec_overrides"))  # fmt: skip
    classes = meta.get("classes") or [str(i) for i in range(net.num_classes)]
    side = net.spec.default_input_size
    # foreign weights (torchvision, timm) were trained on ImageNet: normalise as they were
    mean, std = (convert_stats(stats, net.in_channels) for stats in IMAGENET_STATS)
    return Trained(
        net.eval(),
        classes,
        tuple(meta.get("mean", mean)),
        tuple(meta.get("std", std)),
        tuple(meta.get("image_size", (side, side))),
        path,
    )


def load_image(path: str | Path, trained: Trained) -> torch.Tensor:
    """Decode (as training does), convert to the model's channels, resize and normalise one image: (C, H, W) float."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    image = read_image(path, trained.model.in_channels, min_side=max(trained.image_size))
    image = TF.resize(image, list(trained.image_size), antialias=True)
    return TF.normalize(image.float() / 255, list(trained.mean), list(trained.std))


@torch.no_grad()
def predict(trained: Trained, images: list[str | Path], top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class, probability) for each image file, computed by the deploy path (as `resnets export`)."""
    batch = torch.stack([load_image(p, trained) for p in images])
    model = prepare_for_inference(trained.model)  # the deploy path: BN folded, channels_last
    probs = model(batch.contiguous(memory_format=torch.channels_last)).float().softmax(1)
    k = min(top_k, probs.shape[1])
    values, indices = probs.topk(k, 1)
    return [
        [(trained.classes[i], float(v)) for v, i in zip(row_v, row_i, strict=True)]
        for row_v, row_i in zip(values.tolist(), indices.tolist(), strict=True)
    ]
