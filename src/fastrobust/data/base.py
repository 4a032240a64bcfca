"""The in-memory dataset type and the name -> loader registry."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastrobust.errors import ConfigError, DataError


@dataclass
class ImageDataset:
    """A dataset held as uint8 ``N x C x H x W`` tensors (decoded to ``[0,1]`` per batch).

    Disk datasets hold :class:`~fastrobust.data.imagefolder.LazyImages` instead of tensors for
    ``train_x`` / ``test_x``: indexing one decodes just those files into a uint8 tensor.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: list[float]
    std: list[float]
    crop_padding: int = 0
    """default random-crop padding of training augmentation (0: no crop); a run's
    ``crop_padding`` setting overrides it"""
    flip: bool = False
    """whether training augmentation flips horizontally by default (photos: yes; digits, text
    or images of unknown content: no); a run's ``flip`` setting overrides it"""
    train_crop: str = "pad"
    """training crop: ``pad`` (random crop of the zero-padded image, small images) or
    ``resized`` (random-resized crop of the original photo, disk images of 64 px and more:
    :mod:`fastrobust.data.imagenet_augment`)"""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train_x.shape[1:]
        return (channels, height, width)

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x uint8, y)`` of the ``train`` or ``test`` split."""
        if which == "train":
            return self.train_x, self.train_y
        if which == "test":
            return self.test_x, self.test_y
        raise ConfigError(f"unknown split {which!r}; choose train or test")


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float images in ``[0,1]``."""
    return x_uint8.float().div_(255.0)


def channel_stats(x_uint8: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of a uint8 image tensor, in ``[0,1]`` units."""
    x = to_float(x_uint8)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def existing_folder(data_dir: Path, name: str) -> Path:
    """``data_dir`` if it is a folder, else a one-line :class:`DataError` saying what it is."""
    if data_dir.is_file():
        raise DataError(f"data folder {data_dir} is a file; dataset {name} reads a folder")
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist")
    return data_dir


DatasetLoader = Callable[..., ImageDataset]
DATASETS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator adding a dataset loader ``fn(data_dir, **options) -> ImageDataset``."""

    def wrap(fn: DatasetLoader) -> DatasetLoader:
        DATASETS[name] = fn
        return fn

    return wrap


def dataset_options(name: str) -> set[str]:
    """Keyword options (beyond ``data_dir``) that the loader of dataset ``name`` accepts."""
    if name not in DATASETS:
        return set()
    params = inspect.signature(DATASETS[name]).parameters
    return {p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def load_dataset(name: str, data_dir: str | Path | None = None, **options: Any) -> ImageDataset:
    """Load a registered dataset by name (``digits``, ``cifar10``, ``imagefolder``, ...).

    ``options`` (e.g. ``image_size``) go to loaders that take them; ``None`` values are dropped,
    and a non-``None`` option the dataset does not take is a :class:`ConfigError`.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - dataset_options(name))
    if unknown:
        raise ConfigError(f"dataset {name} does not take the option(s) {', '.join(unknown)}")
    return DATASETS[name](Path(data_dir).expanduser() if data_dir else None, **given)
