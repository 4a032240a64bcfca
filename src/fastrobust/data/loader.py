"""Batches from a whole dataset held as one uint8 tensor on the device.

Order comes from PyTorch's ``DistributedSampler`` (also for one process), so a run on N
processes sees, at every step, exactly the global batch a one-process run sees. Augmentation
(random crop with zero padding, horizontal flip) is drawn for every *sample* of an epoch at once
(:func:`draw_augmentation`, the ``augmentation`` stream of :mod:`fastrobust.seeding`) and
applied batched on the device, so it is the same whatever the number of processes, a resumed
run repeats it exactly, and the disk loader (which uses the same two functions) crops alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data.distributed import DistributedSampler

from fastrobust.data.base import to_float
from fastrobust.seeding import RunSeeds


def draw_augmentation(
    n: int, padding: int, flip: bool, seed: int, epoch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop offsets (``n x 2``, in ``[0, 2*padding]``) and flip flags (``n``) of every sample
    of ``epoch``, from the run's ``augmentation`` stream."""
    g = RunSeeds(seed).augmentation(epoch)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=g)
    flips = torch.rand(n, generator=g) < 0.5
    if not flip:
        flips.zero_()
    return offsets, flips


def crop_and_flip(
    x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, padding: int, flip: bool
) -> torch.Tensor:
    """Batched random crop of ``B x C x H x W`` images zero-padded by ``padding`` (sample i
    starts at ``offsets[i]``), then a horizontal flip where ``flips`` (if ``flip``)."""
    if padding > 0:
        b, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # B x H
        cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # B x W
        bidx = torch.arange(b, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]
        x = x.permute(0, 3, 1, 2)
    if flip:
        x = torch.where(flips[:, None, None, None], x.flip(3), x)
    return x.contiguous()


class ShardedLoader:
    """What both training loaders share: this rank's shard order (``DistributedSampler``, also
    for one process), the epoch, the number of batches and the epoch's augmentation draw."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        crop_padding: int = 0,
        flip: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        drop_last: bool = False,
    ) -> None:
        self.n = n
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.crop_padding = crop_padding
        self.flip = flip
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        #: the training-set indices of the batch last yielded (methods that keep a buffer per
        #: sample read them; None before the first batch)
        self.batch_indices: torch.Tensor | None = None
        self.sampler: DistributedSampler[int] = DistributedSampler(
            range(n),  # type: ignore[arg-type]  # torch says Dataset; only len() is used
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=RunSeeds(seed).sample_order(),
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order and augmentation (call before iterating)."""
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def augmentation(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """This epoch's crop offsets and flips of all ``n`` samples (None: no augmentation)."""
        if self.crop_padding == 0 and not self.flip:
            return None
        return draw_augmentation(self.n, self.crop_padding, self.flip, self.seed, self.epoch)


class InMemoryLoader(ShardedLoader):
    """Iterate ``(x in [0,1], y)`` batches of this rank's shard of ``(x_uint8, y)``;
    ``options`` as :class:`ShardedLoader`."""

    def __init__(
        self, x_uint8: torch.Tensor, y: torch.Tensor, batch_size: int, **options: Any
    ) -> None:
        super().__init__(len(y), batch_size, **options)
        self.x = x_uint8.to(self.device)
        self.y = y.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long, device=self.device)
        aug = self.augmentation()
        if aug is not None:
            aug = (aug[0].to(self.device), aug[1].to(self.device))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            x = to_float(self.x[idx])
            if aug is not None:
                x = crop_and_flip(x, aug[0][idx], aug[1][idx], self.crop_padding, self.flip)
            self.batch_indices = idx
            yield x, self.y[idx]
