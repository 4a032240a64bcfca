"""Batches from a whole dataset held as one uint8 tensor on the device.

Order comes from PyTorch's ``DistributedSampler`` (also for one process), so a run on N
processes sees, at every step, exactly the global batch a one-process run sees. Augmentation
(random crop with zero padding, horizontal flip) is drawn per *sample* per epoch from a
generator seeded by ``(seed, epoch)`` and applied batched on the device, so it too is the same
whatever the number of processes, and a resumed run repeats it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data.distributed import DistributedSampler

from fastrobust.data.base import to_float


class InMemoryLoader:
    """Iterate ``(x in [0,1], y)`` batches of this rank's shard of ``(x_uint8, y)``."""

    def __init__(
        self,
        x_uint8: torch.Tensor,
        y: torch.Tensor,
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
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device)
        self.y = y.to(self.device)
        self.batch_size = batch_size
        self.crop_padding = crop_padding
        self.flip = flip
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.sampler = DistributedSampler(
            range(len(self.y)),  # type: ignore[arg-type]
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's order and augmentation (call before iterating)."""
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _augmentation(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.crop_padding == 0 and not self.flip:
            return None
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 1)
        n = len(self.y)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        if not self.flip:
            flips.zero_()
        return offsets.to(self.device), flips.to(self.device)

    def _augment(self, x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        p = self.crop_padding
        if p > 0:
            b, _, h, w = x.shape
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # B x H
            cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # B x W
            bidx = torch.arange(b, device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]
            x = x.permute(0, 3, 1, 2)
        if self.flip:
            x = torch.where(flips[:, None, None, None], x.flip(3), x)
        return x.contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long, device=self.device)
        aug = self._augmentation()
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            x = to_float(self.x[idx])
            if aug is not None:
                x = self._augment(x, aug[0][idx], aug[1][idx])
            yield x, self.y[idx]
