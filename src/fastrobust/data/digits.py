"""scikit-learn's bundled 8x8 handwritten digits (1797 real images, no download).

Split: test = images whose index in scikit-learn's order is divisible by 5 (360 images),
train = the rest (1437). Pixels 0..16 are rescaled to 0..255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastrobust.data.base import ImageDataset, channel_stats, register_dataset
from fastrobust.errors import ConfigError


@register_dataset("digits")
def load_digits(data_dir: Path | None = None) -> ImageDataset:
    """The digits bundled with scikit-learn; a ``data_dir`` is refused (nothing is read
    from it, so a given one is a mistake)."""
    if data_dir is not None:
        raise ConfigError(
            f"dataset digits is bundled with scikit-learn and reads no files; drop the data "
            f"folder ({data_dir}) or name the dataset it holds"
        )
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1).contiguous()
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
        crop_padding=1,
        flip=False,
    )
