"""Done once before training: the config checked against the data and the processes (batch
size, attack radius, readable evaluation images), the dataset's augmentation defaults filled
into the config, and DDP / SyncBatchNorm / torch.compile around the model."""

from __future__ import annotations

import copy
import logging
from typing import Any, cast

import torch
from torch import nn

from fastrobust.data import ImageDataset, LazyImages
from fastrobust.data.disk_loader import WORKERS, check_decodable
from fastrobust.distributed import WorldInfo
from fastrobust.errors import ConfigError
from fastrobust.training.config import TrainConfig
from fastrobust.training.methods import method_class

log = logging.getLogger(__name__)


def check_before_training(cfg: TrainConfig, data: ImageDataset, world: WorldInfo) -> None:
    """Everything about ``cfg`` that needs the data, checked before anything is written."""
    check_batch_size(cfg.optimisation.batch_size, data, world)
    check_eps_fits(cfg, data)
    method = method_class(cfg.attack.method)
    method.check_fits(cfg.attack.options, len(data.train_y), tuple(data.image_shape))


def check_evaluation_images(
    data: ImageDataset, indices: torch.Tensor, *, seed: int, workers: int = WORKERS
) -> None:
    """Decode the test images validation will use (disk datasets; by ``workers`` DataLoader
    processes), so that a corrupt file stops the run before the run folder and the first
    epoch, not at the first validation."""
    if isinstance(data.test_x, LazyImages):
        checked = check_decodable(data.test_x, indices.tolist(), seed=seed, workers=workers)
        log.info("decoded %d evaluation images of %s: all readable", checked, data.name)


def check_eps_fits(cfg: TrainConfig, data: ImageDataset) -> None:
    """Refuse a radius whose ball covers the whole ``[0,1]`` box: every image would be a
    valid perturbation of every other, so robustness to it means nothing."""
    threat = cfg.threat()
    diameter = threat.box_diameter(data.image_shape)
    if threat.eps >= diameter:
        shape = "x".join(str(s) for s in data.image_shape)
        raise ConfigError(
            f"eps {threat.eps:g} ({cfg.attack.norm}) reaches every image: the largest "
            f"{cfg.attack.norm} distance between two {shape} images in [0,1] is {diameter:.4g}; "
            f"use eps < {diameter:.4g}"
        )


def check_batch_size(batch_size: int, data: ImageDataset, world: WorldInfo) -> None:
    """The global batch must fit the training set and split evenly over the processes."""
    n = len(data.train_y)
    if batch_size > n:
        raise ConfigError(f"batch size {batch_size} is larger than the training set ({n} images)")
    if batch_size % world.world_size:
        raise ConfigError(
            f"global batch size {batch_size} does not divide evenly over "
            f"{world.world_size} processes"
        )


def with_dataset_augmentation(cfg: TrainConfig, data: ImageDataset) -> TrainConfig:
    """A copy of ``cfg`` whose unset ``flip`` / ``crop_padding`` are ``data``'s defaults, so the
    run's config.yaml and checkpoints record the augmentation training actually used."""
    resolved = copy.deepcopy(cfg)
    if resolved.data.flip is None:
        resolved.data.flip = data.flip
    if resolved.data.crop_padding is None:
        resolved.data.crop_padding = data.crop_padding
    return resolved


def wrap_for_training(
    model: nn.Module,
    world: WorldInfo,
    device: torch.device,
    *,
    sync_bn: bool,
    compile_model: bool,
) -> tuple[nn.Module, nn.Module]:
    """``(model, train_model)``: the model (with SyncBatchNorm when asked) and what the
    weight update goes through (DDP-wrapped across processes, compiled when asked).
    Attacks keep using the unwrapped model."""
    train_model = model
    if world.distributed:
        if sync_bn:
            if device.type != "cuda":
                raise ConfigError(
                    "runtime.sync_bn needs GPUs (NCCL); drop it on CPU", field="runtime.sync_bn"
                )
            convert = nn.SyncBatchNorm.convert_sync_batchnorm
            model = train_model = convert(model)  # type: ignore[no-untyped-call]  # torch stubs
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model, compile_static(train_model) if compile_model else train_model


def compile_static(module: nn.Module, backend: Any = "inductor") -> nn.Module:
    """``torch.compile(module)`` with static shapes: training's batches all have one shape but
    the partial last one, which then gets a graph of its own (compiled once) instead of
    turning the graph every batch runs dynamic (``automatic_dynamic_shapes``)."""
    return cast(nn.Module, torch.compile(module, dynamic=False, backend=backend))
