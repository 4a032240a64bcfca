"""A user-supplied architecture, importable as ``user_models:tiny_mlp`` in tests."""

from torch import nn


def tiny_mlp(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, 32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )


NOT_A_FACTORY = 3
