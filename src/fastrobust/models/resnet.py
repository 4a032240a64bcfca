"""CIFAR-style ResNets (3x3 stem, no max-pool): ResNet-18/50 (He et al. 2016) and
PreAct ResNet-18 (He et al. 2016b). ResNet-50 here has ~23.5M parameters, the paper's model.
"""

from __future__ import annotations

import torch
from torch import nn

from fastrobust.models.registry import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _shortcut(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride, bias=False)
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class ResNet(nn.Module):
    """ResNet for small images; ``preact`` adds the final BN-ReLU of the pre-activation variant."""

    def __init__(
        self,
        block: type[nn.Module],
        layers: list[int],
        *,
        num_classes: int,
        in_channels: int,
        preact: bool = False,
    ) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(64)
        self.stem_act = nn.Identity() if preact else nn.ReLU(inplace=True)
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stages.append(self._stage(block, planes, blocks, 1 if i == 0 else 2))
        self.layers = nn.Sequential(*stages)
        final = 512 * block.expansion  # type: ignore[attr-defined]
        self.final_act = (
            nn.Sequential(nn.BatchNorm2d(final), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(final, num_classes)

    def _stage(
        self, block: type[nn.Module], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        mods = []
        for s in [stride] + [1] * (blocks - 1):
            mods.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion  # type: ignore[attr-defined]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_act(self.bn1(self.conv1(x)))
        out = self.final_act(self.layers(out))
        return self.linear(self.flatten(self.pool(out)))


@register_model("resnet18")
def resnet18(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels)


@register_model("preact_resnet18")
def preact_resnet18(
    *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32
) -> nn.Module:
    return ResNet(
        PreActBlock, [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels, preact=True
    )


@register_model("resnet50")
def resnet50(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels)
