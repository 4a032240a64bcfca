"""One training epoch: every batch of this rank's shard through the training method and the
weight update (``replays`` updates per batch), loss and accuracy summed on the device and
read every :data:`LOG_EVERY` batches (the only host syncs in the loop)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from fastrobust import distributed
from fastrobust.errors import TrainingDiverged
from fastrobust.training.build import Parts
from fastrobust.training.preflight import Plan
from fastrobust.training.step import autocast_context, training_step

log = logging.getLogger(__name__)

LOG_EVERY = 10  # batches between progress-bar updates (the only host syncs in the loop)


class EpochTrainer:
    """Trains one epoch of a run; ``last_pt`` is named when the loss diverges."""

    def __init__(self, plan: Plan, parts: Parts, last_pt: Path) -> None:
        self.plan, self.parts, self.last_pt = plan, parts, last_pt

    def train_epoch(self, epoch: int, total: int) -> dict[str, float]:
        """Epoch ``epoch`` (0-based) of ``total``: one pass over this rank's shard; loss and
        accuracy on the perturbed batches."""
        from tqdm.auto import tqdm

        plan, parts = self.plan, self.parts
        cfg, device, loader = plan.cfg, plan.device, parts.loader
        parts.model.train()
        loader.set_epoch(epoch)
        sums = torch.zeros(3, device=device)  # loss * n, correct, n: summed on the device
        # the bar follows the logger, so silencing fastrobust's logging silences it too
        show = cfg.runtime.progress and plan.world.is_main and log.isEnabledFor(logging.INFO)
        desc = f"epoch {epoch + 1}/{total}"
        with tqdm(
            total=len(loader), desc=desc, disable=not show, leave=False, dynamic_ncols=True
        ) as bar:
            for i, (x, y) in enumerate(loader):
                if cfg.runtime.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                parts.method.start_batch(loader.batch_indices, loader.n)
                for _ in range(parts.method.replays):  # weight updates on this batch
                    loss, logits = training_step(
                        parts.train_model,
                        parts.attack_model,
                        parts.method,
                        parts.optimizer,
                        x,
                        y,
                        scaler=parts.scaler,
                        autocast=autocast_context(cfg.runtime.amp, device),
                    )
                    parts.scheduler.step()
                    if parts.average is not None:
                        parts.average.update(parts.model)
                    with torch.no_grad():
                        sums[0] += loss * len(y)
                        sums[1] += (logits.argmax(1) == y).sum()
                        sums[2] += len(y)
                bar.update(1)
                if (i + 1) % LOG_EVERY == 0 or i + 1 == len(loader):  # a host sync
                    loss_avg, acc = (sums[:2] / sums[2]).tolist()
                    self._stop_if_diverged(loss_avg, epoch)
                    bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc:.3f}")
        distributed.all_reduce_sum(sums)
        loss_avg, acc = (sums[:2] / sums[2]).tolist()
        self._stop_if_diverged(loss_avg, epoch)
        return {"train_loss": loss_avg, "train_acc": acc}

    def _stop_if_diverged(self, loss: float, epoch: int) -> None:
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"loss became {loss} in epoch {epoch + 1}; stopped, the last good "
                f"checkpoint is {self.last_pt} (try a lower optimisation.lr)",
                field="optimisation.lr",
            )
