"""Batched, vectorised augmentation on device tensors (random crop, flip, cutout) and mixup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

INCEPTION_CROP_SCALE = 0.08  # the smallest random-resized crop, as a fraction of the image's area (Inception)


@dataclass
class AugmentConfig:
    """Training augmentation switches; in-memory sets use all of them, folder sets use flip and cutout."""

    crop_padding: int = 4  # px of padding for the random crop (in-memory sets); 0 disables it
    flip: bool = True  # random horizontal flip
    cutout: int = (
        0  # side in px of a square zeroed (after normalisation, so it is the mean colour); 0 disables
    )
    pad_mode: Literal["zero", "reflect"] = "zero"
    crop_scale: float = INCEPTION_CROP_SCALE  # folder sets: the smallest random-resized crop (area fraction)


def _uniform_ints(high: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Draw n ints in [0, high) from `generator` (on its own device) and move them to `device`."""
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)


def crop_flip(
    x: torch.Tensor,
    padding: int,
    flip: bool,
    generator: torch.Generator,
    pad_mode: Literal["zero", "reflect"] = "zero",
) -> torch.Tensor:
    """Randomly crop (N, C, H, W) images from a `padding`-padded copy and flip half of them, in one gather."""
    n, _, h, w = x.shape
    if pad_mode == "reflect" and padding >= min(h, w):
        raise ValueError(f"reflect padding of {padding} px needs images larger than that, got {h}x{w}")
    rows = torch.arange(h, device=x.device).expand(n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if padding:
        rows = rows + (_uniform_ints(2 * padding + 1, n, generator, x.device) - padding)[:, None]
        cols = cols + (_uniform_ints(2 * padding + 1, n, generator, x.device) - padding)[:, None]
    if flip:
        flipped = _uniform_ints(2, n, generator, x.device).bool()[:, None]
        cols = torch.where(flipped, cols.flip(1), cols)
    valid = None
    if pad_mode == "reflect":
        rows = torch.where(rows < 0, -rows, torch.where(rows >= h, 2 * (h - 1) - rows, rows))
        cols = torch.where(cols < 0, -cols, torch.where(cols >= w, 2 * (w - 1) - cols, cols))
    elif padding:
        valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if valid is not None:
        out = out * valid[:, None].to(out.dtype)
    return out.contiguous()


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one `size` x `size` square per image at a random centre (clipped at the borders)."""
    n, _, h, w = x.shape
    top = _uniform_ints(h, n, generator, x.device)[:, None] - size // 2
    left = _uniform_ints(w, n, generator, x.device)[:, None] - size // 2
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (ys >= top) & (ys < top + size)
    in_cols = (xs >= left) & (xs < left + size)
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return x.masked_fill(hole[:, None], 0)


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Blend each image with a random partner; the loss is lam * CE(y_a) + (1 - lam) * CE(y_b)."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator, device=generator.device).to(x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam
