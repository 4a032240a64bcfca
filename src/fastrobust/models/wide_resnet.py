"""Wide ResNet (Zagoruyko & Komodakis 2016), WRN-28-10 as used by Madry et al. 2018.

Its blocks are PreAct ResNet basic blocks (pre-activation, 1x1 projection shortcut).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from fastrobust.models.registry import register_model
from fastrobust.models.resnet import PreActBlock as WideBlock  # the same pre-activation block


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = widths[0]
        for i, width in enumerate(widths[1:]):
            for j in range(n):
                blocks.append(WideBlock(in_planes, width, (1 if i == 0 else 2) if j == 0 else 1))
                in_planes = width
        self.blocks = nn.Sequential(*blocks)
        self.final_act = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.final_act(self.blocks(self.conv1(x)))
        return cast(torch.Tensor, self.linear(self.flatten(self.pool(out))))


@register_model("wide_resnet28_10")
def wide_resnet28_10(
    *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32
) -> nn.Module:
    return WideResNet(28, 10, num_classes=num_classes, in_channels=in_channels)
