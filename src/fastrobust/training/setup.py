"""Done once before training: the batch size checked against the data and the processes, the
dataset's augmentation defaults filled into the config, and DDP / SyncBatchNorm /
torch.compile around the model."""

from __future__ import annotations

import copy

import torch
from torch import nn

from fastrobust.data import ImageDataset
from fastrobust.distributed import WorldInfo
from fastrobust.errors import ConfigError
from fastrobust.training.config import TrainConfig


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
                raise ConfigError("--sync-bn needs GPUs (NCCL); drop it on CPU")
            model = train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model, torch.compile(train_model) if compile_model else train_model
