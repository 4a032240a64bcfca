"""PyTorch Lightning adapter: fastrobust's adversarial training inside a Lightning ``Trainer``.

Goodwin et al. (HPEC 2020) trained with PyTorch Lightning; :class:`AdversarialTraining` lets a
Lightning user do the same with any model and any registered training method (``standard``,
``fast``, ``pgd``, ...) without leaving their ``Trainer`` (any strategy, ``ddp`` included)::

    module = AdversarialTraining(net, AttackConfig(method="fast", norm="l2", eps=1.0))
    lightning.Trainer(max_epochs=15).fit(module, train_loader, val_loader)

Batches are ``(images in [0,1], labels)``; normalisation belongs inside ``net`` (e.g. a
:class:`~fastrobust.models.NormalizedModel`). Per batch the training method perturbs the
images on ``self.model``, which is always the unwrapped module: Lightning's strategies wrap the
LightningModule itself (DDP, FSDP, ...), so the attack's input gradients never trigger a
gradient all-reduce, and only the loss of the perturbed batch is back-propagated into the
weights (Algorithm 1). Validation logs clean and PGD accuracy (``val_clean_acc``,
``val_adv_acc``) under the training threat model, with gradients enabled for the attack
even though Lightning validates in inference mode.

Every method behaves as in the native engine (:mod:`fastrobust.training.trainer`):

* methods that replay batches (``free``, Shafahi et al. 2019) use Lightning's manual
  optimisation: each batch is trained on ``replays`` times, one backward per replay updating
  the weights and, through the input gradient it also yields, the perturbation carried to the
  next replay and batch. ``max_epochs`` counts Lightning epochs, each of ``replays`` passes:
  for a budget of N passes use ``max_epochs=module.epochs_for(N)`` (``ceil(N / replays)``,
  as the native engine runs); the learning-rate schedule spans ``max_epochs * replays``
  passes. Manual optimisation leaves gradient clipping to the user (``gradient_clip_val``
  is refused by Lightning).
* methods that change across epochs (``curriculum``) follow their schedule from
  ``current_epoch`` of ``max_epochs``; the ``adaptive`` schedule reads the overfitting
  check, PGD accuracy on ``check_batch`` (a fixed training batch, e.g. 1024 images) after
  every epoch, measured on rank 0 and broadcast, as the native engine does.
* what a method carries between epochs (free's perturbation, curriculum's stage) and the
  check's best reading are saved in Lightning checkpoints (rank 0's).

Needs the optional extra: ``pip install -e ".[lightning]"``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch
from torch import nn

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fastrobust.lightning needs PyTorch Lightning: pip install -e '.[lightning]'"
    ) from exc

from fastrobust.attacks import pgd
from fastrobust.errors import ConfigError
from fastrobust.training.config import AttackConfig, OptimisationConfig
from fastrobust.training.methods import TrainingMethod, build_method
from fastrobust.training.monitor import OverfittingMonitor
from fastrobust.training.optimisation import build_optimiser
from fastrobust.training.validation import fixed_batch_pgd_accuracy

__all__ = ["AdversarialTraining"]


class AdversarialTraining(pl.LightningModule):  # type: ignore[misc]  # lightning: no stubs, Any
    """A LightningModule training ``model`` with a fastrobust training method.

    ``attack`` picks the method and threat model (default: fast L2, eps 1.0); ``optimisation``
    the SGD settings and learning-rate schedule (its ``epochs`` is replaced by the Trainer's
    ``max_epochs``; ``model``/``batch_size`` are not used here: the model and the loaders are
    yours). ``eval_steps``: PGD steps of the validation attack and the overfitting check (step
    ``2.5 * eps / steps``). ``check_batch``: ``(images, labels)`` of a fixed training batch
    whose PGD accuracy after each epoch is the overfitting check (needed by ``curriculum``
    ``adaptive``; optional otherwise, logged as ``overfit_check_pgd_acc``). Override
    ``configure_optimizers`` for another optimiser (one optimiser; a scheduler is optional).
    """

    def __init__(
        self,
        model: nn.Module,
        attack: AttackConfig | None = None,
        optimisation: OptimisationConfig | None = None,
        *,
        eval_steps: int = 10,
        check_batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.attack = attack or AttackConfig()
        self.optimisation = optimisation or OptimisationConfig()
        self.method: TrainingMethod = build_method(self.attack)
        self.method.label_smoothing = self.optimisation.label_smoothing
        if self.method.needs_sample_indices:
            raise ConfigError(
                f"method {self.attack.method} keeps a buffer per training sample and needs "
                "each batch's sample indices, which Lightning's loaders do not give; train it "
                "with fastrobust.fit or fastrobust train",
                field="attack.method",
            )
        if self.method.needs_overfitting_check and check_batch is None:
            raise ConfigError(
                f"{self.method.describe()} needs the overfitting check in Lightning: pass "
                "check_batch=(images, labels) of a fixed training batch, or use curriculum "
                "linear or switch"
            )
        self.threat = self.attack.threat()
        self.eval_steps = eval_steps
        self.check_batch = check_batch
        self.monitor = OverfittingMonitor(
            self.model, armed=self.method.perturbs, keep_good_weights=False
        )
        #: the attack each epoch trained with (``method.describe()``), as metrics.jsonl has it
        self.epoch_attacks: list[str] = []
        # replayed batches need one optimiser step per replay: Lightning's manual optimisation
        self.automatic_optimization = self.method.replays == 1

    def epochs_for(self, passes: int) -> int:
        """``max_epochs`` for a budget of ``passes`` over the data (weight updates per image):
        ``ceil(passes / replays)`` for ``free``, ``passes`` for every other method."""
        return self.method.epochs_to_run(passes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.model(x))

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor | None:
        x, y = batch
        if not self.automatic_optimization:
            loss, accuracy = self._replay(x, y)
        else:
            # attack on the unwrapped module, weight update on the perturbed batch's loss
            loss, logits = self.method.loss(self.model, self.model, x, y)
            accuracy = (logits.argmax(1) == y).float().mean()
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=len(y))
        self.log("train_acc", accuracy, on_epoch=True, sync_dist=True, batch_size=len(y))
        return loss if self.automatic_optimization else None

    def _replay(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``replays`` optimiser steps on one batch (free adversarial training, Shafahi et al.
        2019): each backward fills the weight gradients and the carried perturbation's input
        gradient, which the method's next ``loss`` call steps along. Returns the mean loss and
        accuracy over the replays (as the native engine averages them)."""
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        losses, correct = [], []
        for _ in range(self.method.replays):
            loss, logits = self.method.loss(self.model, self.model, x, y)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(loss.detach())
            correct.append((logits.detach().argmax(1) == y).float().mean())
        return torch.stack(losses).mean(), torch.stack(correct).mean()

    def _planned_epochs(self) -> int:
        """The Trainer's ``max_epochs``, or the config's ``epochs`` when it has none (-1)."""
        epochs = self.trainer.max_epochs
        return int(epochs) if epochs is not None and epochs > 0 else self.optimisation.epochs

    def on_train_epoch_start(self) -> None:
        self.method.start_epoch(self.current_epoch, self._planned_epochs())
        self.epoch_attacks.append(self.method.describe())

    def on_train_epoch_end(self) -> None:
        acc, collapsed = None, False
        if self.check_batch is not None:
            if self.trainer.is_global_zero:
                acc = self.overfit_check()
                collapsed = self.monitor.update(acc, epoch=self.current_epoch + 1)
            acc, collapsed = self.trainer.strategy.broadcast((acc, bool(collapsed)), src=0)
            self.log("overfit_check_pgd_acc", float(acc), sync_dist=True)  # equal on every rank
        self.method.end_epoch(acc, collapsed)

    def overfit_check(self) -> float:
        """PGD accuracy on ``check_batch`` (eval mode, on its own random stream so that the
        training stream is the same with or without the check)."""
        assert self.check_batch is not None
        x, y = (t.to(self.device) for t in self.check_batch)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            return fixed_batch_pgd_accuracy(self.model, x, y, self.threat, steps=self.eval_steps)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["fastrobust_method"] = self.method.state_dict()
        checkpoint["fastrobust_monitor"] = self.monitor.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.method.load_state_dict(checkpoint.get("fastrobust_method", {}))
        self.monitor.load_state_dict(checkpoint.get("fastrobust_monitor", {}))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        with torch.inference_mode(False), torch.enable_grad():
            x, y = (t.clone() for t in batch)  # inference tensors cannot enter autograd
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                clean = (self.model(x).argmax(1) == y).float().mean()
            x_adv = pgd(
                self.model,
                x,
                y,
                self.threat,
                steps=self.eval_steps,
                step_size=2.5 * cast(float, self.threat.eps) / self.eval_steps,
            )
            with torch.no_grad():
                adv = (self.model(x_adv).argmax(1) == y).float().mean()
            self.model.train(was_training)
        size = len(y)
        self.log("val_clean_acc", clean, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("val_adv_acc", adv, on_epoch=True, sync_dist=True, prog_bar=True, batch_size=size)

    def configure_optimizers(self) -> dict[str, Any]:
        epochs = max(1, self._planned_epochs())
        batches_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        # the schedule counts passes, as the native engine's: free steps it once per replay
        passes = dataclasses.replace(self.optimisation, epochs=epochs * self.method.replays)
        optimizer, scheduler = build_optimiser(self.model, passes, batches_per_epoch)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
