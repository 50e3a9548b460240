"""Looking inside a trained model: Grad-CAM heat maps, the images it gets most wrong, the classes it confuses.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of the last feature map by the mean gradient of the
class score over that map, sums, and keeps the positive part. For our networks (global average pooling then
one linear layer) that equals CAM (Zhou et al., 2016) made from the classifier's weights, which is how the
tests check it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .models import ResNet


def grad_cam(model: ResNet, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H, W) heat maps in [0, 1] at the input's size, for class `target` (default: the predicted one)."""
    model.eval()
    with torch.enable_grad():
        features = model.forward_features(x.detach()).detach().requires_grad_(True)  # (N, C, h, w)
        logits = model.forward_head(features)
        target = logits.argmax(1) if target is None else target
        score = logits.gather(1, target.view(-1, 1)).sum()
        (grads,) = torch.autograd.grad(score, features)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1): alpha_k^c
    cam = F.relu((weights * features.detach()).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
    return cam / peak


def overlay(image: torch.Tensor, cam: torch.Tensor, alpha: float = 0.45) -> np.ndarray:
    """An (H, W, 3) uint8 picture: the uint8 (C, H, W) image with the heat map blended over it (jet)."""
    from matplotlib import colormaps

    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    base = rgb.permute(1, 2, 0).float().numpy() / 255
    heat = colormaps["jet"](cam.numpy())[..., :3]
    blend = ((1 - alpha) * base + alpha * heat).clip(0, 1)
    return (blend * 255).round().astype(np.uint8)


@dataclass
class Mistake:
    index: int  # position in the evaluated split
    loss: float  # -log p(true class)
    true: int
    predicted: int
    probability: float  # of the predicted class


def top_losses(probs: torch.Tensor, targets: torch.Tensor, k: int = 9) -> list[Mistake]:
    """The `k` images with the highest loss (fastai's `plot_top_losses`), worst first."""
    losses = -probs.gather(1, targets.view(-1, 1))[:, 0].clamp(min=1e-12).log()
    worst = losses.topk(min(k, len(losses))).indices.tolist()
    return [
        Mistake(i, float(losses[i]), int(targets[i]), int(probs[i].argmax()), float(probs[i].max()))
        for i in worst
    ]


def most_confused(confusion: torch.Tensor, k: int = 5) -> list[tuple[int, int, int]]:
    """(true, predicted, count) of the `k` largest off-diagonal cells, largest first, zeros left out."""
    off = confusion.clone()
    off.fill_diagonal_(0)
    values, flat = off.flatten().topk(min(k, off.numel()))
    n = confusion.shape[1]
    return [(int(f) // n, int(f) % n, int(v)) for v, f in zip(values, flat, strict=True) if v > 0]
