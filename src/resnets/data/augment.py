"""Batched, vectorised augmentation on device tensors (random crop, flip, cutout, fastai's distortions) and
mixup."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

INCEPTION_CROP_SCALE = 0.08  # the smallest random-resized crop, as a fraction of the image's area (Inception)
INCEPTION_CROP_RATIO = 4 / 3  # the random-resized crop's widest aspect ratio (its inverse the narrowest)
# fastai's aug_transforms: each distortion (rotation, zoom, warp along x, along y, brightness, contrast) is
# applied to an image with this probability (its p_affine and p_lighting), else left neutral
DISTORT_P = 0.75


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
    crop_ratio: float = INCEPTION_CROP_RATIO  # folder sets: the crop's aspect ratio lies in [1/this, this]
    rotate: float = 0.0  # the largest random rotation, in degrees (fastai: 10)
    zoom: float = 1.0  # the largest random zoom in, at a random centre (fastai: 1.1)
    warp: float = (
        0.0  # the largest perspective warp, each corner moved by up to this x the half side (fastai: 0.2)
    )
    lighting: float = 0.0  # the largest brightness and contrast change (fastai: 0.2)

    @property
    def distorts(self) -> bool:
        """Whether any of fastai's distortions (rotate, zoom, warp, lighting) is on."""
        return bool(self.rotate or self.zoom > 1 or self.warp or self.lighting)

    def describe(self, in_memory: bool) -> list[str]:
        """The augmentations in words, one item each (for reports and logs)."""
        if in_memory:
            parts = [f"{self.crop_padding} px random crops"] if self.crop_padding else []
        else:
            ratio = (
                "square"
                if self.crop_ratio == 1
                else f"aspect {1 / self.crop_ratio:.2f}-{self.crop_ratio:.2f}"
            )
            parts = [f"random-resized crops ({self.crop_scale:g}-1 of the area, {ratio})"]
        parts += ["horizontal flips"] if self.flip else []
        parts += [f"rotations up to {self.rotate:g} degrees"] if self.rotate else []
        parts += [f"zoom up to {self.zoom:g}x"] if self.zoom > 1 else []
        parts += [f"perspective warps up to {self.warp:g}"] if self.warp else []
        parts += [f"brightness and contrast changes up to {self.lighting:g}"] if self.lighting else []
        return parts + ([f"cutout {self.cutout} px"] if self.cutout else [])


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


@dataclass
class Distortion:
    """One batch's draws of fastai's distortions, one value per image; a neutral value leaves an image as is."""

    angle: torch.Tensor  # rotation in degrees (0: none)
    scale: torch.Tensor  # zoom factor (1: none)
    centre: torch.Tensor  # (N, 2): the zoom's centre as (x, y) fractions of the width and height
    warp: torch.Tensor  # (N, 2): the perspective warp's x and y magnitudes (0: none)
    brightness: torch.Tensor  # the brightness mid-grey becomes (0.5: none)
    contrast: torch.Tensor  # the factor on the logits (1: none)
    # which steps run, known from the settings (reading the draws would wait for the GPU every batch)
    resample: bool = True  # rotation, zoom or warp
    warps: bool = True
    relight: bool = True


def _draw(n: int, low: float, high: float, neutral: float, generator: torch.Generator) -> torch.Tensor:
    """n draws from U(low, high), each kept with probability DISTORT_P and else `neutral` (fastai's mask)."""
    u = torch.rand(2, n, generator=generator, device=generator.device)
    return torch.where(u[1] < DISTORT_P, low + (high - low) * u[0], torch.full_like(u[0], neutral))


def draw_distortion(n: int, aug: AugmentConfig, generator: torch.Generator) -> Distortion:
    """Random draws for `n` images, distributed as fastai's aug_transforms draws them (its Rotate, Zoom, Warp,
    Brightness and Contrast, each with probability DISTORT_P); off settings draw neutral values."""
    log_contrast = -math.log(1 - aug.lighting)
    return Distortion(
        angle=_draw(n, -aug.rotate, aug.rotate, 0.0, generator),
        scale=_draw(n, 1.0, aug.zoom, 1.0, generator),
        centre=torch.rand(n, 2, generator=generator, device=generator.device),
        warp=torch.stack([_draw(n, -aug.warp, aug.warp, 0.0, generator) for _ in range(2)], 1),
        brightness=_draw(n, 0.5 * (1 - aug.lighting), 0.5 * (1 + aug.lighting), 0.5, generator),
        contrast=_draw(n, -log_contrast, log_contrast, 0.0, generator).exp(),
        resample=bool(aug.rotate or aug.zoom > 1 or aug.warp),
        warps=bool(aug.warp),
        relight=bool(aug.lighting),
    )


def _homography(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) projective maps taking each image's 4 `source` points (N, 4, 2) to its `target` points."""
    x, y = source.unbind(-1)
    u, v = target.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], -1)
    solution = torch.linalg.solve(torch.cat([rows_u, rows_v], 1), torch.cat([u, v], 1))
    return torch.cat([solution, one[:, :1]], 1).view(-1, 3, 3)


def warp_grid(grid: torch.Tensor, warp: torch.Tensor) -> torch.Tensor:
    """Apply each image's perspective warp to its sampling grid (N, H, W, 2): the output's points at the
    corners moved by (x, y) magnitudes `warp` (N, 2), as fastai's Warp moves them, sample the input's corners."""
    corners = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]], device=grid.device)
    dx, dy = warp[:, 0, None], warp[:, 1, None]
    sx, sy = corners[None, :, 0], corners[None, :, 1]  # as fastai: the y magnitude moves corners along x
    moved = torch.stack([sx * (1 - sy * dy), sy * (1 - sx * dx)], -1)
    matrix = _homography(moved, corners.expand_as(moved))
    points = torch.cat([grid, torch.ones_like(grid[..., :1])], -1).flatten(1, 2) @ matrix.transpose(1, 2)
    return (points[..., :2] / points[..., 2:]).view_as(grid)


def distort(x: torch.Tensor, d: Distortion) -> torch.Tensor:
    """fastai's distortions of float (N, C, H, W) images in [0, 1]: rotation about the centre, zoom about
    `centre` and perspective warp in one bilinear resampling (borders reflected), then brightness and
    contrast in logit space (fastai's lighting). Unlike fastai, which resamples before its random-resized crop
    (on the presized image), this runs after the crop, so rotated corners reflect the crop's own border."""
    n, _, h, w = x.shape
    if d.resample:
        theta, s = torch.deg2rad(d.angle), 1 / d.scale
        shift = (1 - s)[:, None] * (2 * d.centre - 1)  # zoom about the centre, as fastai's zoom_mat
        cos, sin = theta.cos(), theta.sin()
        matrix = torch.stack([  # fastai's rotate @ zoom (output to input coordinates), off-diagonals aspect-corrected
            torch.stack([cos * s, sin * s * h / w, cos * shift[:, 0] + sin * shift[:, 1]], 1),
            torch.stack([-sin * s * w / h, cos * s, -sin * shift[:, 0] + cos * shift[:, 1]], 1),
        ], 1)  # fmt: skip
        grid = F.affine_grid(matrix.to(x.dtype), [n, x.shape[1], h, w], align_corners=True)
        if d.warps:
            grid = warp_grid(grid, d.warp.to(x.dtype))
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    if d.relight:
        shape = (n, 1, 1, 1)
        logits = torch.logit(x, eps=1e-7) + torch.logit(d.brightness).view(shape)
        x = torch.sigmoid(logits * d.contrast.view(shape))
    return x


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
