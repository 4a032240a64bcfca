"""A small CNN for tiny images (8x8 digits, 28x28, 32x32): seconds per epoch on a CPU."""

from __future__ import annotations

from torch import nn

from fastrobust.models.registry import register_model


@register_model("small_cnn")
def small_cnn(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Two conv blocks (32, 64 channels), one pooling step, a 128-unit representation layer."""
    width = 32
    pooled = max(image_size // 2, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(min(pooled, 4)),
        nn.Flatten(),
        nn.Linear(2 * width * min(pooled, 4) ** 2, 128),
        nn.ReLU(inplace=True),
        nn.Linear(128, num_classes),
    )
