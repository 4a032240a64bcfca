"""ResNet checkpoints written by other code, mapped onto fastrobust's ResNet.

Two layouts are read (both safely, with ``torch.load(weights_only=True)``):

- **robustness**: checkpoints of MadryLab's ``robustness`` library (Engstrom et al. 2019), the
  source of the pre-trained Restricted ImageNet model Goodwin et al. (HPEC 2020) used. A dict
  whose ``model`` entry holds the state of an ``AttackerModel`` wrapped in ``DataParallel``:
  ``module.model.*`` (the ResNet), ``module.normalizer.new_mean`` / ``new_std`` (its input
  normalisation) and ``module.attacker.*`` (the same ResNet and normaliser again, ignored).
  Its CIFAR ResNets use ``shortcut`` and ``linear``; its ImageNet ResNets the torchvision names.
- **torchvision**: a plain ResNet state dict in torchvision's key layout (``layer1.0.conv1``,
  ``downsample``, ``fc``), optionally under a ``state_dict`` or ``model`` entry and with a
  ``module.`` prefix. It holds no normalisation: the caller gives the mean and std (ImageNet's
  when none is given).

The depth (18/34/50/101/152), stem (a 7x7 first convolution means the ImageNet stem), width,
input channels and class count are read from the tensor shapes, so any such checkpoint loads
without naming its architecture; a given ``arch`` is checked against them. The robustness
normaliser's mean and std become the :class:`~fastrobust.models.NormalizedModel` buffers, so
the loaded model takes ``[0,1]`` images like every fastrobust model.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fastrobust.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from fastrobust.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, RESTRICTED_IMAGENET_RANGES
from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.models.registry import MODELS, NormalizedModel
from fastrobust.models.resnet import DEPTHS, STEMS, BasicBlock, Bottleneck, resnet
from fastrobust.safe_load import load_tensors_file

log = logging.getLogger(__name__)

LAYOUTS = ("robustness", "torchvision")

_ROBUSTNESS_PARTS = ("model.", "normalizer.", "attacker.")
_STAGE = re.compile(r"^layer([1-4])\.(\d+)\.")
_SHORTCUT = re.compile(r"^(layers\.\d\.\d+\.)(downsample|shortcut)\.")
_ARCH = re.compile(r"^resnet(\d+)(?:_(cifar|imagenet))?$")


@dataclass(frozen=True)
class DatasetDefaults:
    """What a foreign checkpoint does not record about the dataset it was trained on."""

    image_size: int
    mean: list[float]
    std: list[float]
    classes: tuple[str, ...] | None = None


#: defaults per dataset name for checkpoints trained elsewhere (the checkpoint's own
#: normalisation, when it has one, wins over these mean/std)
DATASET_DEFAULTS: dict[str, DatasetDefaults] = {
    "cifar10": DatasetDefaults(32, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": DatasetDefaults(32, CIFAR100_MEAN, CIFAR100_STD),
    "restricted_imagenet": DatasetDefaults(
        224,
        IMAGENET_MEAN,
        IMAGENET_STD,
        tuple(name for name, _, _ in RESTRICTED_IMAGENET_RANGES),
    ),
}
STEM_IMAGE_SIZE = {"imagenet": 224, "cifar": 32}
"""image size assumed for a foreign ResNet with this stem when its dataset is not known"""


@dataclass
class ForeignWeights:
    """A foreign ResNet checkpoint with its keys renamed to fastrobust's ResNet."""

    layout: str
    """``robustness`` or ``torchvision``"""
    weights: dict[str, torch.Tensor]
    """the ResNet's state dict in fastrobust's key names"""
    mean: list[float] | None
    """input normalisation recorded in the checkpoint (robustness layout only)"""
    std: list[float] | None


@dataclass
class ResNetShape:
    """What the tensor shapes of a ResNet state dict say about its architecture."""

    depth: int
    stem: str
    width: int
    in_channels: int
    num_classes: int

    @property
    def name(self) -> str:
        """Model name, e.g. ``resnet50_imagenet`` (registered when the width is 64)."""
        return f"resnet{self.depth}_{self.stem}"

    @property
    def registered(self) -> bool:
        """Whether :func:`~fastrobust.models.build_model` can rebuild this architecture."""
        return self.width == 64 and self.name in MODELS


def read_weights_file(path: str | Path) -> dict[str, Any]:
    """The dict saved in ``path``, read with ``weights_only=True`` (never code)."""
    obj = load_tensors_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of weights")
    return obj


def _strip_prefix(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _inner_state(raw: dict[str, Any]) -> dict[str, Any]:
    """The state dict inside a checkpoint dict (under ``model`` / ``state_dict``, or itself)."""
    for key in ("model", "state_dict"):
        inner = raw.get(key)
        if isinstance(inner, dict):
            return inner
    return raw


def detect_layout(raw: dict[str, Any]) -> str:
    """``robustness`` when the state holds a ``normalizer`` or ``attacker``, else ``torchvision``."""
    state = _strip_prefix(_inner_state(raw), "module.")
    if any(k.startswith(("normalizer.", "attacker.")) for k in state):
        return "robustness"
    return "torchvision"


def _renamed(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """torchvision / robustness ResNet keys -> fastrobust ResNet keys (``layers.N``, ...)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = _STAGE.sub(lambda m: f"layers.{int(m.group(1)) - 1}.{m.group(2)}.", key)
        key = _SHORTCUT.sub(r"\1shortcut.", key)
        if key.startswith("fc."):
            key = "linear." + key[3:]
        out[key] = value
    return out


def _flat(stats: torch.Tensor) -> list[float]:
    return [float(v) for v in stats.detach().float().flatten()]


def convert(raw: dict[str, Any], layout: str | None = None) -> ForeignWeights:
    """Rename a loaded checkpoint dict of ``layout`` (detected when None) to fastrobust keys."""
    layout = layout or detect_layout(raw)
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown checkpoint layout {layout!r}; choose one of {LAYOUTS}")
    state = _strip_prefix(_inner_state(raw), "module.")
    bad = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"the checkpoint's state holds non-tensor entries: {bad[:3]}")
    mean = std = None
    if layout == "robustness":
        unexpected = sorted(k for k in state if not k.startswith(_ROBUSTNESS_PARTS))
        if unexpected:
            raise CheckpointError(
                "not a robustness AttackerModel state: unexpected keys " + ", ".join(unexpected[:5])
            )
        if "normalizer.new_mean" in state and "normalizer.new_std" in state:
            mean = _flat(state["normalizer.new_mean"])
            std = _flat(state["normalizer.new_std"])
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    return ForeignWeights(layout=layout, weights=_renamed(state), mean=mean, std=std)


def infer_shape(weights: dict[str, torch.Tensor]) -> ResNetShape:
    """Depth, stem, width, input channels and classes of a ResNet state dict in fastrobust keys."""
    try:
        conv1 = weights["conv1.weight"]
        linear = weights["linear.weight"]
    except KeyError as exc:
        raise CheckpointError(f"not a ResNet state dict: no {exc.args[0]} (or fc.weight)") from None
    blocks = [0, 0, 0, 0]
    for key in weights:
        m = re.match(r"layers\.(\d)\.(\d+)\.", key)
        if m and int(m.group(1)) < 4:
            stage = int(m.group(1))
            blocks[stage] = max(blocks[stage], int(m.group(2)) + 1)
    block = Bottleneck if "layers.0.0.conv3.weight" in weights else BasicBlock
    depth = next((d for d, (b, n) in DEPTHS.items() if b is block and n == blocks), None)
    if depth is None:
        raise CheckpointError(
            f"not a ResNet-{'/'.join(map(str, DEPTHS))} state dict: "
            f"{block.__name__} blocks per stage {blocks}"
        )
    return ResNetShape(
        depth=depth,
        stem="imagenet" if conv1.shape[-1] == 7 else "cifar",
        width=int(conv1.shape[0]),
        in_channels=int(conv1.shape[1]),
        num_classes=int(linear.shape[0]),
    )


def check_arch(shape: ResNetShape, arch: str) -> None:
    """Raise unless ``arch`` (``resnet50``, ``resnet50_imagenet``, ...) names ``shape``."""
    m = _ARCH.match(arch)
    if m is None or int(m.group(1)) not in DEPTHS:
        raise ConfigError(
            f"arch {arch!r} is not a ResNet; give resnet18/34/50/101/152, optionally with "
            f"_{'/_'.join(STEMS)}"
        )
    depth, stem = int(m.group(1)), m.group(2)
    if depth != shape.depth or (stem is not None and stem != shape.stem):
        raise CheckpointError(
            f"the checkpoint holds a {shape.name} (width {shape.width}), not a {arch}"
        )


def load_weights_into(
    net: torch.nn.Module, weights: dict[str, torch.Tensor], what: str = "model"
) -> None:
    """``load_state_dict`` that names the missing and unexpected keys in one line on mismatch.

    BatchNorm ``num_batches_tracked`` counters (absent from old torchvision files) may be missing.
    """
    result = net.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", result.unexpected_keys)):
            if keys:
                shown = ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"checkpoint keys do not match the {what}; " + "; ".join(parts))


def foreign_model(
    foreign: ForeignWeights,
    *,
    arch: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> tuple[NormalizedModel, ResNetShape]:
    """Build the ResNet ``foreign`` describes and load its weights.

    Normalisation: ``mean``/``std`` when given, else the checkpoint's (robustness layout), else
    ImageNet's for 3-channel inputs (what torchvision-layout ImageNet models expect).
    """
    shape = infer_shape(foreign.weights)
    if arch is not None:
        check_arch(shape, arch)
    net = resnet(
        shape.depth,
        stem=shape.stem,
        num_classes=shape.num_classes,
        in_channels=shape.in_channels,
        width=shape.width,
    )
    try:
        load_weights_into(net, foreign.weights, shape.name)
    except RuntimeError as exc:  # a tensor of the wrong shape
        msg = str(exc).strip().splitlines()
        raise CheckpointError(f"checkpoint does not fit {shape.name}: {msg[-1].strip()}") from None
    mean = mean or foreign.mean
    std = std or foreign.std
    if mean is None or std is None:
        if shape.in_channels != 3:
            raise ConfigError(
                f"the {foreign.layout} checkpoint records no normalisation; give mean and std"
            )
        log.info("no normalisation recorded in the checkpoint: using ImageNet's mean and std")
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    return NormalizedModel(net, mean, std), shape


def load_foreign_model(
    path: str | Path,
    *,
    arch: str | None = None,
    layout: str | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> tuple[NormalizedModel, ResNetShape, ForeignWeights]:
    """Read a robustness or torchvision-layout ResNet checkpoint as an eval-mode model.

    Returns the model (taking ``[0,1]`` images), its architecture and the converted weights.
    """
    foreign = convert(read_weights_file(path), layout)
    model, shape = foreign_model(foreign, arch=arch, mean=mean, std=std)
    log.info(
        "loaded %s (%s layout, width %d) from %s", shape.name, foreign.layout, shape.width, path
    )
    return model.eval(), shape, foreign
