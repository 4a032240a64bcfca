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

Outside training (validation, the test-set numbers of a run, ``fastrobust eval`` and
``fastrobust certify``) the images of a disk dataset are decoded by :func:`decoded_batches`
(and :func:`decoded`): ``workers`` DataLoader processes decode the next batches while the
attacks run on this one; in-memory tensors pass through untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fastrobust.data.base import ImageDataset, to_float
from fastrobust.data.imagefolder import LazyImages, decode_check_sample
from fastrobust.data.imagenet_augment import ResizedCropOptions, augment_file, sample_seeds
from fastrobust.data.loader import InMemoryLoader, ShardedLoader, crop_and_flip
from fastrobust.errors import DataError

WORKERS = 2
"""DataLoader worker processes decoding a disk dataset, by default (training, eval, certify)"""
PREFETCH = 2
"""batches each worker decodes ahead of the one in use (DataLoader's prefetch_factor)"""

Indices = torch.Tensor | Sequence[int] | range


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


class _Decoded(Dataset[torch.Tensor]):
    """Map-style dataset: ``i -> uint8 image i`` of a :class:`LazyImages` (no augmentation)."""

    def __init__(self, images: LazyImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images.load(i)


def decoded_batches(
    x: torch.Tensor | LazyImages,
    batch_size: int,
    *,
    indices: Indices | None = None,
    workers: int = WORKERS,
    prefetch: int = PREFETCH,
) -> Iterator[torch.Tensor]:
    """The images ``indices`` of ``x`` (all of them, in order, when None), ``batch_size`` at
    a time and in order: ``x[indices[0:b]]``, ``x[indices[b:2b]]``, ...

    A :class:`LazyImages` is decoded by ``workers`` DataLoader processes (0: in this
    process), each ``prefetch`` batches ahead, so the caller works on batch i while they
    decode the next ones; the bytes are those :meth:`LazyImages.load` gives in this process.
    A file that cannot be decoded raises the worker's one-line DataError naming it. A tensor
    passes through as it is indexed today: slices (views) for None or a range, else
    ``x[index batch]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(x, LazyImages):
        yield from _tensor_batches(x, batch_size, indices)
        return
    order = list(range(len(x))) if indices is None else _as_list(indices)
    batches = [order[lo : lo + batch_size] for lo in range(0, len(order), batch_size)]
    if not batches:
        return
    processes = min(workers, len(batches))
    extra: dict[str, Any] = {"prefetch_factor": prefetch} if processes > 0 else {}
    loader = DataLoader(_Decoded(x), batch_sampler=batches, num_workers=processes, **extra)
    iterator = iter(loader)
    try:
        yield from iterator
    except DataError as exc:  # raised in a worker: torch puts its traceback in the text
        raise DataError(worker_message(str(exc)), field=exc.field) from None
    finally:
        # the workers stop now (an error, a caller that stops early), not whenever the
        # garbage collector reaches a traceback that still holds the iterator
        stop = getattr(iterator, "_shutdown_workers", None)
        if stop is not None:
            stop()


def _tensor_batches(
    x: torch.Tensor, batch_size: int, indices: Indices | None
) -> Iterator[torch.Tensor]:
    if indices is None or (isinstance(indices, range) and indices.step == 1):
        start, stop = (0, len(x)) if indices is None else (indices.start, indices.stop)
        for lo in range(start, stop, batch_size):
            yield x[lo : min(lo + batch_size, stop)]
        return
    idx = _index_tensor(indices)
    for lo in range(0, len(idx), batch_size):
        yield x[idx[lo : lo + batch_size]]


def _index_tensor(indices: Indices) -> torch.Tensor:
    if isinstance(indices, torch.Tensor):
        return indices
    return torch.tensor(_as_list(indices), dtype=torch.long)


def _as_list(indices: Indices) -> list[int]:
    if isinstance(indices, torch.Tensor):
        return [int(i) for i in indices.flatten().tolist()]
    return [int(i) for i in indices]


def decoded(
    x: torch.Tensor | LazyImages, indices: Indices, *, workers: int = WORKERS
) -> torch.Tensor:
    """The images ``indices`` of ``x`` as one tensor: ``x[indices]`` (a slice view for a
    range of a tensor), a :class:`LazyImages` decoded by ``workers`` processes, each taking
    an equal share (see :func:`decoded_batches`)."""
    if not isinstance(x, LazyImages):
        if isinstance(indices, range) and indices.step == 1:
            return x[indices.start : indices.stop]
        return x[_index_tensor(indices)]
    order = _as_list(indices)
    if not order:
        return x[[]]
    share = -(-len(order) // max(workers, 1))
    return torch.cat(list(decoded_batches(x, share, indices=order, workers=workers)))


def head(x: torch.Tensor | LazyImages, n: int, *, workers: int = WORKERS) -> torch.Tensor:
    """The first ``n`` images of ``x`` (``x[:n]``; decoded by ``workers`` processes when on
    disk): the probe a model-fits-data or logits check runs on."""
    return decoded(x, range(min(n, len(x))), workers=workers)


def check_decodable(
    images: LazyImages,
    indices: Sequence[int] | None = None,
    *,
    seed: int = 0,
    workers: int = WORKERS,
    batch_size: int = 64,
) -> int:
    """Decode the images at ``indices`` (all when None) with ``workers`` processes, so that a
    corrupt file stops a run before training rather than at its first validation; above
    :data:`~fastrobust.data.imagefolder.DECODE_CHECK_IMAGES` a random sample of that many
    (drawn with ``seed``) is decoded. Returns how many were."""
    picked = decode_check_sample(images, indices, seed=seed)
    for _ in decoded_batches(images, batch_size, indices=picked, workers=workers):
        pass  # a DataError naming the file if one cannot be decoded
    return len(picked)
