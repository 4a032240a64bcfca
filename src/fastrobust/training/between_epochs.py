"""What a run measures between epochs and at its end: the catastrophic-overfitting check on
the fixed training batch (rank 0), validation (clean + PGD, sharded over ranks), the final
weights on the whole test set, and the best epoch's weights (``best.pt``) on it.

Everything here runs on its own random stream (seeded per epoch from the run's seed), so
training's stream is the same however often these run."""

from __future__ import annotations

import logging
import time
from typing import Any, cast

import torch
from torch import nn

from fastrobust import distributed
from fastrobust.checkpoint import load_checkpoint
from fastrobust.data.base import to_float
from fastrobust.data.disk_loader import decoded
from fastrobust.training.build import Parts
from fastrobust.training.preflight import Plan
from fastrobust.training.run_folder import RunFolder, TrainResult
from fastrobust.training.state import TrainState
from fastrobust.training.validation import evaluate_split, fixed_batch_pgd_accuracy

log = logging.getLogger(__name__)


class BetweenEpochs:
    """The overfitting check and validation of one run (see the module docstring)."""

    def __init__(self, plan: Plan, parts: Parts, folder: RunFolder) -> None:
        self.plan, self.parts, self.folder = plan, parts, folder
        self.check_idx = plan.check_idx

    @property
    def model(self) -> nn.Module:
        """The unwrapped model (what is checked and validated)."""
        return self.parts.model

    def _devices(self) -> list[int]:
        device = self.plan.device
        return [device.index or 0] if device.type == "cuda" else []

    def overfit_check(self) -> float:
        """PGD accuracy on the fixed training batch (the overfitting monitor's input)."""
        data, device = self.plan.data, self.plan.device
        x = to_float(decoded(data.train_x, self.check_idx, workers=self.plan.cfg.data.workers))
        x = x.to(device)
        y = data.train_y[self.check_idx].to(device)
        return fixed_batch_pgd_accuracy(
            self.model,
            x,
            y,
            self.parts.threat,
            steps=self.plan.cfg.evaluation.eval_steps,
            batch_size=self.parts.loader.batch_size,  # this rank's training batch: no peak
        )

    def validate(self, *, whole_split: bool = False) -> tuple[float, float]:
        """Clean and PGD accuracy on the test split (a class-stratified sample of
        ``eval_limit`` of its images when that is set: the plan's ``val_subset``; every image
        with ``whole_split``) of the evaluated weights (the weight average when it is on)."""
        plan = self.plan
        return evaluate_split(
            self.parts.evaluated,
            plan.data.test_x,
            plan.data.test_y,
            self.parts.threat,
            indices=None if whole_split else plan.val_subset.index_tensor(),
            steps=plan.cfg.evaluation.eval_steps,
            batch_size=self.parts.loader.batch_size,  # this rank's batch, not the global one
            device=plan.device,
            world=plan.world,
            workers=plan.cfg.data.workers,
        )

    def after_epoch(self, metrics: dict[str, Any], epoch: int, total: int) -> bool:
        """Overfitting check (rank 0) and validation after epoch ``epoch`` (1-based) of
        ``total``; returns whether the run collapsed. Each records its seconds
        (``check_time_s``, ``val_time_s``, ``test_time_s``)."""
        plan, parts = self.plan, self.parts
        with torch.random.fork_rng(devices=self._devices()):
            torch.manual_seed(plan.seeds.between_epochs(epoch))
            collapsed, acc = False, None
            check_due = epoch % plan.intervals.overfit_check_every == 0
            if check_due and plan.world.is_main and len(self.check_idx) > 0:
                t0 = time.perf_counter()
                acc = metrics["overfit_check_pgd_acc"] = self.overfit_check()
                metrics["check_time_s"] = time.perf_counter() - t0
                collapsed = parts.monitor.update(acc, epoch=epoch)
                if collapsed:
                    metrics["catastrophic_overfitting"] = True
            shared = distributed.broadcast_object((bool(collapsed), acc))
            collapsed, acc = cast(tuple[bool, float | None], shared)
            parts.method.end_epoch(acc, collapsed)
            stop = collapsed and plan.cfg.evaluation.early_stop
            if stop:  # every rank takes rank 0's last good weights
                good = parts.monitor.good_weights
                shared = distributed.broadcast_object(good) if plan.world.distributed else good
                good = cast("dict[str, torch.Tensor] | None", shared)
                parts.monitor.restore(good)
            last = epoch == total
            if epoch % plan.intervals.eval_every == 0 or last or stop:
                t0 = time.perf_counter()
                metrics["val_clean_acc"], metrics["val_adv_acc"] = self.validate()
                metrics["val_time_s"] = time.perf_counter() - t0
            if (last or stop) and not plan.val_subset.is_whole_split:
                # the final weights on the whole test set, once (validation used a subset)
                t0 = time.perf_counter()
                metrics["test_clean_acc"], metrics["test_adv_acc"] = self.validate(whole_split=True)
                metrics["test_time_s"] = time.perf_counter() - t0
        return collapsed

    def test_set_results(self, state: TrainState, result: TrainResult) -> None:
        """The final and the best epoch's weights on the whole test set (``summary.json``).

        The final weights were measured in the last epoch (``test_*`` of its row, or its
        validation when that used the whole split); the best epoch's are measured here from
        ``best.pt`` unless they are the final ones or were validated on the whole split."""
        rows = {int(r["epoch"]): r for r in state.history}
        whole = self.plan.val_subset.is_whole_split
        result.test_images = len(self.plan.data.test_y)

        def on_test_set(row: dict[str, Any]) -> tuple[float, float] | None:
            if "test_adv_acc" in row:
                return row["test_clean_acc"], row["test_adv_acc"]
            if whole and "val_adv_acc" in row:
                return row["val_clean_acc"], row["val_adv_acc"]
            return None

        final = on_test_set(state.history[-1])
        if final is not None:
            result.test_clean_acc, result.test_adv_acc = final
        best = state.best.epoch
        if best is None:
            return
        measured = on_test_set(rows[best]) if best in rows else None
        if measured is None:
            t0 = time.perf_counter()
            measured = self.measure_best_on_test_set(best)
            result.best_test_s = time.perf_counter() - t0
        result.best_test_clean_acc, result.best_test_adv_acc = measured

    def measure_best_on_test_set(self, epoch: int) -> tuple[float, float]:
        """Clean and PGD accuracy of ``best.pt``'s weights (the averaged ones when weight
        averaging is on) on the whole test set (every rank takes part; the model keeps its
        final weights afterwards)."""
        plan = self.plan
        key = "ema_model" if self.parts.average is not None else "model"
        evaluated = self.parts.evaluated
        weights = None
        if plan.world.is_main:
            weights = load_checkpoint(self.folder.best_pt)[key]  # on the CPU
        if plan.world.distributed:
            weights = distributed.broadcast_object(weights)
        final = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
        try:
            evaluated.load_state_dict(cast(dict[str, Any], weights))
            with torch.random.fork_rng(devices=self._devices()):
                torch.manual_seed(plan.seeds.best_epoch_test(epoch))
                clean, adv = self.validate(whole_split=True)
        finally:
            evaluated.load_state_dict(final)
        log.info(
            "best epoch %d on the whole test set (%d images): clean %.3f, adversarial %.3f",
            epoch,
            len(plan.data.test_y),
            clean,
            adv,
        )
        return clean, adv
