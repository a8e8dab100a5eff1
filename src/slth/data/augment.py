"""Seeded augmentation: every random draw comes from a generator the caller passes, so an augmented epoch
is a function of (seed, epoch) -- in one process or several, with or without DataLoader workers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def crop_flip_draws(n: int, gen: torch.Generator, pad: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random numbers of :func:`random_crop_flip` for ``n`` images: (top, left, flip), each (n, 1)."""
    top = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    left = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    flip = torch.rand(n, 1, generator=gen) < 0.5
    return top, left, flip


def apply_crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
                    pad: int = 4) -> torch.Tensor:
    """Crop each image of ``x`` (N, C, H, W) at (top, left) of its zero-padded copy, flipped where ``flip``."""
    n, c, h, w = x.shape
    device = x.device
    top, left, flip = top.to(device), left.to(device), flip.to(device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = top + torch.arange(h, device=device)
    cols = left + torch.arange(w, device=device)
    cols = torch.where(flip, cols.flip(1), cols)
    images = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(c, device=device)[None, :, None, None]
    return padded[images, channels, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Per-image random crop after zero padding ``pad`` and random horizontal flip, batched (the draws on
    the CPU generator ``gen``, the crop on ``x``'s device)."""
    return apply_crop_flip(x, *crop_flip_draws(len(x), gen, pad), pad=pad)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def random_resized_crop_box(width: int, height: int, gen: torch.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """The box (left, top, right, bottom) of an Inception-style random resized crop (Szegedy et al. 2015,
    arXiv:1409.4842; as torchvision's RandomResizedCrop): area fraction in ``scale``, log-uniform aspect
    ratio in ``ratio``, ten tries, then the central crop of the clamped ratio."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    return left, top, left + size, top + size
