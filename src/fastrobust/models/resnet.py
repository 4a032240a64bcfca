"""ResNets (He et al. 2016) with two stems, and PreAct ResNet-18 (He et al. 2016b).

- ``cifar`` stem (3x3 convolution, stride 1, no max-pool), for small images (CIFAR's 32 px):
  ``resnet18``, ``resnet50`` (the names old checkpoints carry) and ``preact_resnet18``;
  ``resnet18_cifar`` / ``resnet50_cifar`` are the same models under explicit names.
- ``imagenet`` stem (7x7 convolution, stride 2, then a 3x3 stride-2 max-pool), for images of
  64 px and more: ``resnet18_imagenet``, ``resnet50_imagenet``. At 224 px the ImageNet stem
  costs about 1/16 of the FLOPs and activation memory of the CIFAR stem.

The stem is part of the model's name, so a config and a checkpoint always say which one was
used; training turns a plain ``resnet18`` / ``resnet50`` into ``*_imagenet`` for images of
64 px and more (:func:`resolve_stem`) and records that name. The 9-class ResNet-50 with the ImageNet stem (Restricted ImageNet, the paper's
second model) has 23,526,473 parameters; the 10-class CIFAR one 23,520,842.
"""

from __future__ import annotations

from typing import cast

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
        return cast(torch.Tensor, out + shortcut)


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
    )


#: the residual block classes a :class:`ResNet` stacks (each has an ``expansion`` factor)
Block = type[BasicBlock | Bottleneck | PreActBlock]

STEMS = ("cifar", "imagenet")
IMAGENET_STEM_MIN_PX = 64
"""images at least this large get the ImageNet stem from :func:`resolve_stem`"""


class ResNet(nn.Module):
    """ResNet with a ``cifar`` or ``imagenet`` stem (see the module docstring).

    ``preact`` adds the final BN-ReLU of the pre-activation variant (CIFAR stem only);
    ``width`` is the channel count of the first stage (64 in every published ResNet; tests use
    a few channels to stay fast).
    """

    def __init__(
        self,
        block: Block,
        layers: list[int],
        *,
        num_classes: int,
        in_channels: int,
        preact: bool = False,
        stem: str = "cifar",
        width: int = 64,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown ResNet stem {stem!r}; choose one of {', '.join(STEMS)}")
        if preact and stem != "cifar":
            raise ValueError("the pre-activation ResNet has only the cifar stem")
        self.stem = stem
        self.in_planes = width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(width)
        self.stem_act = nn.Identity() if preact else nn.ReLU(inplace=True)
        self.stem_pool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        stages = []
        planes_per_stage = (width, 2 * width, 4 * width, 8 * width)
        for i, (planes, blocks) in enumerate(zip(planes_per_stage, layers)):
            stages.append(self._stage(block, planes, blocks, 1 if i == 0 else 2))
        self.layers = nn.Sequential(*stages)
        final = 8 * width * block.expansion
        self.final_act = (
            nn.Sequential(nn.BatchNorm2d(final), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(final, num_classes)

    def _stage(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        mods = []
        for s in [stride] + [1] * (blocks - 1):
            mods.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem_pool(self.stem_act(self.bn1(self.conv1(x))))
        out = self.final_act(self.layers(out))
        return cast(torch.Tensor, self.linear(self.flatten(self.pool(out))))


#: block type and blocks per stage of each ResNet depth (He et al. 2016, Table 1)
DEPTHS: dict[int, tuple[Block, list[int]]] = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def resnet(
    depth: int,
    *,
    stem: str,
    num_classes: int,
    in_channels: int = 3,
    width: int = 64,
) -> ResNet:
    """A ResNet of ``depth`` 18, 34, 50, 101 or 152 with the given stem and first-stage width."""
    if depth not in DEPTHS:
        raise ValueError(f"no ResNet of depth {depth}; choose one of {sorted(DEPTHS)}")
    block, layers = DEPTHS[depth]
    return ResNet(
        block, layers, num_classes=num_classes, in_channels=in_channels, stem=stem, width=width
    )


def resolve_stem(name: str, image_size: int) -> str:
    """The model name training uses for ``name`` at ``image_size`` px.

    ``resnet18`` and ``resnet50`` become ``*_imagenet`` for images of at least
    :data:`IMAGENET_STEM_MIN_PX` px (below, they already name the CIFAR stem); every other
    name, including the explicit ``*_cifar`` / ``*_imagenet`` ones, is returned unchanged.
    """
    if name in ("resnet18", "resnet50") and image_size >= IMAGENET_STEM_MIN_PX:
        return f"{name}_imagenet"
    return name


@register_model("resnet18")
@register_model("resnet18_cifar")
def resnet18(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """ResNet-18, CIFAR stem (``resnet18`` in checkpoints written before the ImageNet stem)."""
    return resnet(18, stem="cifar", num_classes=num_classes, in_channels=in_channels)


@register_model("resnet18_imagenet")
def resnet18_imagenet(
    *, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224
) -> nn.Module:
    """ResNet-18, ImageNet stem."""
    return resnet(18, stem="imagenet", num_classes=num_classes, in_channels=in_channels)


@register_model("preact_resnet18")
def preact_resnet18(
    *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32
) -> nn.Module:
    return ResNet(
        PreActBlock, [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels, preact=True
    )


@register_model("resnet50")
@register_model("resnet50_cifar")
def resnet50(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """ResNet-50, CIFAR stem (``resnet50`` in checkpoints written before the ImageNet stem)."""
    return resnet(50, stem="cifar", num_classes=num_classes, in_channels=in_channels)


@register_model("resnet50_imagenet")
def resnet50_imagenet(
    *, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224
) -> nn.Module:
    """ResNet-50, ImageNet stem: the paper's Restricted ImageNet model (9 classes, 224 px)."""
    return resnet(50, stem="imagenet", num_classes=num_classes, in_channels=in_channels)
