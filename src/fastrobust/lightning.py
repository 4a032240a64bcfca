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

Needs the optional extra: ``pip install -e ".[lightning]"``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "fastrobust.lightning needs PyTorch Lightning: pip install -e '.[lightning]'"
    ) from exc

from fastrobust.attacks import pgd
from fastrobust.training.config import AttackConfig, OptimisationConfig
from fastrobust.training.methods import TrainingMethod, build_method
from fastrobust.training.optimisation import build_optimiser

__all__ = ["AdversarialTraining"]


class AdversarialTraining(pl.LightningModule):
    """A LightningModule training ``model`` with a fastrobust training method.

    ``attack`` picks the method and threat model (default: fast L2, eps 1.0); ``optimisation``
    the SGD settings and learning-rate schedule (its ``epochs`` is replaced by the Trainer's
    ``max_epochs``; ``model``/``batch_size`` are not used here: the model and the loaders are
    yours). ``eval_steps``: PGD steps of the validation attack (step ``2.5 * eps / steps``).
    Override ``configure_optimizers`` for another optimiser.
    """

    def __init__(
        self,
        model: nn.Module,
        attack: AttackConfig | None = None,
        optimisation: OptimisationConfig | None = None,
        *,
        eval_steps: int = 10,
    ) -> None:
        super().__init__()
        self.model = model
        self.attack = attack or AttackConfig()
        self.optimisation = optimisation or OptimisationConfig()
        self.method: TrainingMethod = build_method(self.attack)
        self.threat = self.attack.threat()
        self.eval_steps = eval_steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        x, y = batch
        # attack on the unwrapped module, weight update on the perturbed batch's loss
        loss, logits = self.method.loss(self.model, self.model, x, y)
        self.log("train_loss", loss.detach(), prog_bar=True, batch_size=len(y))
        accuracy = (logits.argmax(1) == y).float().mean()
        self.log("train_acc", accuracy, on_epoch=True, sync_dist=True, batch_size=len(y))
        return loss

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
                step_size=2.5 * self.threat.eps / self.eval_steps,
            )
            with torch.no_grad():
                adv = (self.model(x_adv).argmax(1) == y).float().mean()
            self.model.train(was_training)
        size = len(y)
        self.log("val_clean_acc", clean, on_epoch=True, sync_dist=True, batch_size=size)
        self.log("val_adv_acc", adv, on_epoch=True, sync_dist=True, prog_bar=True, batch_size=size)

    def configure_optimizers(self):  # noqa: ANN201  Lightning's own return type
        epochs = max(1, int(self.trainer.max_epochs or self.optimisation.epochs))
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        optimizer, scheduler = build_optimiser(
            self.model, dataclasses.replace(self.optimisation, epochs=epochs), steps_per_epoch
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
