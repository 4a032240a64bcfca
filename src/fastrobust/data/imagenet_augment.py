"""ImageNet-style augmentation of disk images: random-resized crop from the original photo.

Training (Szegedy et al. 2015, the crop every ImageNet recipe uses, and MadryLab
``robustness``'s Restricted ImageNet training): a box covering 8%-100% of the photo's area
with aspect ratio between 3/4 and 4/3 is chosen at random (10 tries, then the largest central
box of an allowed aspect ratio), cut from the *original* image and resized to
``size x size``; then a horizontal flip with probability 1/2; optionally colour jitter
(brightness, contrast and saturation each scaled by a factor in ``[1-s, 1+s]``, in that order)
and AlexNet's PCA lighting noise (Krizhevsky et al. 2012) with ImageNet's eigenvalues and
eigenvectors, as ``robustness`` adds for Restricted ImageNet (s = 0.1, std 0.05).

Evaluation: the shorter side is resized to ``size * 256/224`` and the central ``size x size``
square is kept (:data:`EVAL_RESIZE_RATIO`, used by :func:`~fastrobust.data.imagefolder.decode_image`).

Every random number of one sample comes from a generator seeded by that sample's entry of
:func:`sample_seeds` (one draw per epoch from the run's ``augmentation(epoch)`` stream), so a
sample is cropped alike whatever the number of processes or DataLoader workers, differently
in every epoch, and again alike on resume. JPEGs are decoded in draft mode (DCT-domain
downscaling) whenever the chosen box stays at least ``size`` pixels after the reduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fastrobust.errors import DataError
from fastrobust.seeding import RunSeeds, generator

SCALE = (0.08, 1.0)
"""range of the crop's share of the photo's area"""
RATIO = (3 / 4, 4 / 3)
"""range of the crop's aspect ratio (width / height), sampled log-uniformly"""
TRIES = 10
EVAL_RESIZE_RATIO = 256 / 224
"""evaluation resizes the shorter side to ``size * 256/224`` before the central crop"""
MIN_SIZE = 64
"""disk images of at least this size get this augmentation; smaller ones pad-crop + flip"""

#: ImageNet RGB covariance: eigenvalues and eigenvectors (columns), for the lighting noise
PCA_EIGENVALUES = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGENVECTORS = torch.tensor(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
)


@dataclass(frozen=True)
class ResizedCropOptions:
    """What the training augmentation does beyond the crop and flip."""

    flip: bool = True
    """horizontal flip with probability 1/2"""
    color_jitter: float = 0.0
    """brightness, contrast and saturation factors drawn from ``[1-s, 1+s]`` (0: off)"""
    lighting: float = 0.0
    """standard deviation of the PCA lighting noise (0: off)"""


def sample_seeds(n: int, seed: int, epoch: int) -> torch.Tensor:
    """One generator seed per training sample for ``epoch`` (the run's augmentation stream)."""
    return torch.randint(0, 2**62, (n,), generator=RunSeeds(seed).augmentation(epoch))


def crop_box(width: int, height: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """``(left, top, crop_width, crop_height)`` of a random-resized crop of a photo."""
    area = width * height
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    for _ in range(TRIES):
        u = torch.rand(4, generator=g).tolist()
        target = area * (SCALE[0] + u[0] * (SCALE[1] - SCALE[0]))
        aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = min(int(u[2] * (width - w + 1)), width - w)
            top = min(int(u[3] * (height - h + 1)), height - h)
            return left, top, w, h
    # fallback: the largest central box whose aspect ratio is within RATIO
    aspect = width / height
    if aspect < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif aspect > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def decode_resized_crop(
    path: Path,
    size: int,
    channels: int,
    g: torch.Generator,
    *,
    draft: bool = True,
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Decode ``path``, cut a :func:`crop_box` (drawn from ``g``) and resize it to
    ``size x size``; returns the uint8 ``C x size x size`` image and the box (original pixels)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            left, top, w, h = box = crop_box(width, height, g)
            reduce = min(w, h) // size
            if draft and img.format == "JPEG" and reduce >= 2:
                img.draft("L" if channels == 1 else None, (width // reduce, height // reduce))
            scale_x, scale_y = img.size[0] / width, img.size[1] / height
            img = img.convert("L" if channels == 1 else "RGB")
            region = (
                left * scale_x,
                top * scale_y,
                (left + w) * scale_x,
                (top + h) * scale_y,
            )
            img = img.resize((size, size), Image.Resampling.BILINEAR, box=region)
            arr = np.asarray(img, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001  any decoding failure names the file
        raise DataError(f"cannot read image {path}: {exc}") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), box


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of a ``3 x H x W`` float image, ``1 x H x W``."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]


def jitter_colors(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, then saturation of a float ``3 x H x W`` image in ``[0,1]``, each
    scaled by a factor drawn uniformly from ``[1-strength, 1+strength]``."""
    factors: list[float] = (1 - strength + 2 * strength * torch.rand(3, generator=g)).tolist()
    x = (x * factors[0]).clamp(0, 1)
    mean = _grey(x).mean()
    x = ((x - mean) * factors[1] + mean).clamp(0, 1)
    grey = _grey(x)
    return ((x - grey) * factors[2] + grey).clamp(0, 1)


def lighting_noise(x: torch.Tensor, std: float, g: torch.Generator) -> torch.Tensor:
    """AlexNet's PCA lighting noise: adds ``eigvec @ (alpha * eigval)``, ``alpha ~ N(0, std)``,
    to every pixel of a float ``3 x H x W`` image in ``[0,1]``."""
    alpha = torch.randn(3, generator=g) * std
    shift = PCA_EIGENVECTORS @ (alpha * PCA_EIGENVALUES)
    return (x + shift[:, None, None]).clamp(0, 1)


def augment_file(
    path: Path, size: int, channels: int, seed: int, options: ResizedCropOptions
) -> torch.Tensor:
    """The training view of one image file for one epoch (``seed``: its :func:`sample_seeds`
    entry): random-resized crop, flip, optional colour jitter and lighting; uint8."""
    g = generator(int(seed))
    x, _ = decode_resized_crop(path, size, channels, g)
    if options.flip and bool(torch.rand((), generator=g) < 0.5):
        x = x.flip(2)
    if channels == 3 and (options.color_jitter > 0 or options.lighting > 0):
        image = x.float().div_(255)
        if options.color_jitter > 0:
            image = jitter_colors(image, options.color_jitter, g)
        if options.lighting > 0:
            image = lighting_noise(image, options.lighting, g)
        x = image.mul_(255).round_().to(torch.uint8)
    return x.contiguous()
