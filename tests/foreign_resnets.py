"""Stand-ins for ResNets written by other code, with their real attribute (= state-dict key) names.

``TorchvisionStyleResNet`` has torchvision's names (``conv1``, ``bn1``, ``layer1`` .. ``layer4``,
``downsample``, ``fc``); with ``cifar=True`` it has the names and stem of MadryLab
``robustness``'s CIFAR ResNets (3x3 stem, no max-pool, ``shortcut``, ``linear``).
``RobustnessWrapper`` reproduces the ``AttackerModel`` key layout of ``robustness`` checkpoints
(``normalizer.new_mean``, ``model.*``, ``attacker.normalize.*``, ``attacker.model.*``).
The forward passes are written here independently of fastrobust's ResNet, so a converted
checkpoint that predicts the same as these modules is a real check of the key mapping.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]


class Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, shortcut_name: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, planes, 3, stride)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, 1)
        proj = stride != 1 or cin != planes
        setattr(
            self, shortcut_name, nn.Sequential(*_conv_bn(cin, planes, 1, stride)) if proj else None
        )
        self.shortcut_name = shortcut_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = getattr(self, self.shortcut_name)
        return torch.relu(y + (skip(x) if skip is not None else x))


class Bottle(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, shortcut_name: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, planes, 1, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = _conv_bn(planes, planes * 4, 1, 1)
        proj = stride != 1 or cin != planes * 4
        setattr(
            self,
            shortcut_name,
            nn.Sequential(*_conv_bn(cin, planes * 4, 1, stride)) if proj else None,
        )
        self.shortcut_name = shortcut_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = getattr(self, self.shortcut_name)
        return torch.relu(y + (skip(x) if skip is not None else x))


class TorchvisionStyleResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, width: int = 4, cifar: bool = False) -> None:
        super().__init__()
        block, counts = {18: (Basic, [2, 2, 2, 2]), 50: (Bottle, [3, 4, 6, 3])}[depth]
        shortcut_name = "shortcut" if cifar else "downsample"
        if cifar:
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.pool_first = not cifar
        cin = width
        for i, n in enumerate(counts):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, 2 if (j == 0 and i > 0) else 1, shortcut_name))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        head = nn.Linear(cin, num_classes)
        self.head_name = "linear" if cifar else "fc"
        setattr(self, self.head_name, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        if self.pool_first:
            x = nn.functional.max_pool2d(x, 3, 2, 1)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return getattr(self, self.head_name)(x.mean(dim=(2, 3)))


class Normalizer(nn.Module):
    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("new_mean", torch.tensor(mean)[:, None, None])
        self.register_buffer("new_std", torch.tensor(std)[:, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.clamp(0, 1) - self.new_mean) / self.new_std


class Attacker(nn.Module):
    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalizer(mean, std)
        self.model = model


class RobustnessWrapper(nn.Module):
    """``AttackerModel``'s attributes: ``normalizer``, ``model``, ``attacker``."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalizer = Normalizer(mean, std)
        self.model = model
        self.attacker = Attacker(model, mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalizer(x))


class DataParallelKeys(nn.Module):
    """Adds the ``module.`` prefix ``nn.DataParallel`` gives every key."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN running statistics and affine parameters, so a BN mix-up changes outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
