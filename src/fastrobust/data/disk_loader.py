"""Batches of a disk dataset, decoded and augmented in DataLoader worker processes.

Same interface, order and augmentation as :class:`~fastrobust.data.loader.InMemoryLoader`: the
order comes from PyTorch's ``DistributedSampler`` (also for one process), so N processes
together see the global batch one process sees; the crop offsets and flips of every sample are
drawn per epoch by the same :func:`~fastrobust.data.loader.draw_augmentation` (so the same seed
crops the same sample alike in memory and from disk, whatever the number of processes or
workers, and repeats on resume) and applied per image in the worker.
Disk images of 64 px and more get ImageNet's random-resized crop of the original photo instead
(:mod:`fastrobust.data.imagenet_augment`): one seed per sample and epoch from the same stream,
so that crop too is the same whatever the number of processes or workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fastrobust.data.base import ImageDataset, to_float
from fastrobust.data.imagefolder import LazyImages
from fastrobust.data.imagenet_augment import ResizedCropOptions, augment_file, sample_seeds
from fastrobust.data.loader import InMemoryLoader, ShardedLoader, crop_and_flip
from fastrobust.errors import DataError


class AugmentedImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Map-style dataset: ``i -> (uint8 image i, augmented for the current epoch, label i)``;
    ``augmentation`` (pad-crop offsets and flips) or ``sample_seeds`` (random-resized crop) is
    the epoch's draw, set before the workers start."""

    def __init__(
        self,
        images: LazyImages,
        labels: torch.Tensor,
        *,
        crop_padding: int = 0,
        flip: bool = False,
        resized_crop: ResizedCropOptions | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.crop_padding = crop_padding
        self.flip = flip
        self.resized_crop = resized_crop
        self.augmentation: tuple[torch.Tensor, torch.Tensor] | None = None
        self.sample_seeds: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resized_crop is not None and self.sample_seeds is not None:
            images = self.images
            x = augment_file(
                images.files[i],
                images.size,
                images.channels,
                int(self.sample_seeds[i]),
                self.resized_crop,
            )
            return x, self.labels[i]
        x = self.images.load(i)
        if self.augmentation is not None:
            offsets, flips = self.augmentation
            x = crop_and_flip(
                x[None], offsets[i : i + 1], flips[i : i + 1], self.crop_padding, self.flip
            )[0]
        return x, self.labels[i]


class DiskLoader(ShardedLoader):
    """Iterate ``(x in [0,1] on device, y on device)`` batches of this rank's shard, decoded
    by ``workers`` DataLoader processes; ``options`` as
    :class:`~fastrobust.data.loader.ShardedLoader`."""

    def __init__(
        self,
        images: LazyImages,
        y: torch.Tensor,
        batch_size: int,
        *,
        workers: int = 2,
        resized_crop: ResizedCropOptions | None = None,
        **options: Any,
    ) -> None:
        super().__init__(len(y), batch_size, **options)
        self.dataset = AugmentedImages(
            images, y, crop_padding=self.crop_padding, flip=self.flip, resized_crop=resized_crop
        )
        self._draw()
        extra: dict[str, Any] = {"prefetch_factor": 4} if workers > 0 else {}
        # workers are started per epoch (not persistent) so each sees the epoch set below
        self.loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=self.drop_last,
            pin_memory=self.device.type == "cuda",
            **extra,
        )

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self._draw()

    def _draw(self) -> None:
        """The epoch's augmentation: pad-crop offsets and flips, or per-sample crop seeds."""
        self.dataset.augmentation = self.augmentation()
        if self.dataset.resized_crop is not None:
            self.dataset.sample_seeds = sample_seeds(self.n, self.seed, self.epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        non_blocking = self.device.type == "cuda"
        # the DataLoader draws its batches from the same sampler, whose order is fixed by the
        # epoch: batch i holds the i-th slice of it
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        try:
            for i, (x, y) in enumerate(self.loader):
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                self.batch_indices = idx.to(self.device, non_blocking=non_blocking)
                yield (
                    to_float(x.to(self.device, non_blocking=non_blocking)),
                    y.to(self.device, non_blocking=non_blocking),
                )
        except DataError as exc:  # raised in a worker: torch puts its traceback in the text
            raise DataError(worker_message(str(exc)), field=exc.field) from None


def worker_message(text: str) -> str:
    """The DataError's own message out of the text DataLoader re-raises it with ("Caught
    DataError in DataLoader worker process 0. Original Traceback ...: DataError: msg")."""
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    return last.split("DataError: ", 1)[-1].strip()


def make_loader(
    data: ImageDataset,
    batch_size: int,
    *,
    augment: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | str = "cpu",
    workers: int = 2,
    color_jitter: float = 0.0,
    lighting: float = 0.0,
    crop_padding: int | None = None,
    flip: bool | None = None,
) -> InMemoryLoader | DiskLoader:
    """The training loader of ``data``: :class:`InMemoryLoader` for tensors held in memory,
    :class:`DiskLoader` (``workers`` DataLoader processes) for :class:`LazyImages`.

    A dataset whose ``train_crop`` is ``resized`` (disk images of 64 px and more) is augmented
    by random-resized crop + flip, plus ``color_jitter`` and ``lighting`` when set
    (:mod:`fastrobust.data.imagenet_augment`); the others by pad-crop + flip.

    ``crop_padding`` / ``flip``: the run's augmentation (``None``: the dataset's defaults,
    ``data.crop_padding`` / ``data.flip``); ``augment=False`` turns both off."""
    padding = data.crop_padding if crop_padding is None else crop_padding
    flips = data.flip if flip is None else flip
    common: dict[str, Any] = {
        "shuffle": True,
        "crop_padding": padding if augment else 0,
        "flip": flips and augment,
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
        "device": device,
    }
    if isinstance(data.train_x, LazyImages):
        resized = None
        if augment and data.train_crop == "resized":
            resized = ResizedCropOptions(flips, color_jitter, lighting)
            common.update(crop_padding=0, flip=False)  # the resized crop does both
        return DiskLoader(
            data.train_x, data.train_y, batch_size, workers=workers, resized_crop=resized, **common
        )
    return InMemoryLoader(data.train_x, data.train_y, batch_size, **common)
