"""scikit-learn's bundled 8x8 handwritten digits (1797 real images, no download).

Split: test = images whose index in scikit-learn's order is divisible by 5 (360 images),
train = the rest (1437). Pixels 0..16 are rescaled to 0..255. ``image_size`` upsamples the
images (bilinear): larger inputs give single-step training more room to overfit (the
catastrophic-overfitting study in docs/catastrophic_overfitting.md uses 16x16 digits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastrobust.data.base import ImageDataset, channel_stats, register_dataset
from fastrobust.errors import ConfigError


@register_dataset("digits")
def load_digits(data_dir: Path | None = None, *, image_size: int | None = None) -> ImageDataset:
    """The digits bundled with scikit-learn (``image_size``: upsampled, bilinear); a
    ``data_dir`` is refused (nothing is read from it, so a given one is a mistake)."""
    if data_dir is not None:
        raise ConfigError(
            f"dataset digits is bundled with scikit-learn and reads no files; drop the data "
            f"folder ({data_dir}) or name the dataset it holds"
        )
    from sklearn.datasets import load_digits as sk_load_digits

    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1).contiguous()
    if image_size is not None and image_size != x.shape[-1]:
        x = _resize(x, image_size)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    is_test = torch.arange(len(y)) % 5 == 0
    mean, std = channel_stats(x[~is_test])
    return ImageDataset(
        name="digits",
        train_x=x[~is_test].contiguous(),
        train_y=y[~is_test].contiguous(),
        test_x=x[is_test].contiguous(),
        test_y=y[is_test].contiguous(),
        classes=[str(i) for i in range(10)],
        mean=mean,
        std=std,
        crop_padding=max(1, x.shape[-1] // 8),
        flip=False,
    )


def _resize(x_uint8: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of uint8 images to ``size x size``, rounded back to uint8."""
    x = torch.nn.functional.interpolate(
        x_uint8.float(), size=(size, size), mode="bilinear", align_corners=False
    )
    return x.round_().clamp_(0, 255).to(torch.uint8).contiguous()
