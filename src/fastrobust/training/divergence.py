"""TRADES and MART: multi-step methods whose weight update adds a KL divergence between the
model's outputs on the clean and the adversarial batch.

* ``trades`` (Zhang et al. 2019, "Theoretically principled trade-off between robustness and
  accuracy"): the attack maximises ``KL(p(x) || p(x'))`` from a small Gaussian start
  (``0.001 * N(0, 1)``), the update minimises ``CE(f(x), y) + beta * KL(p(x) || p(x_adv))``
  (``beta`` 6 for CIFAR-10; reference code: 10 steps of 0.007 for eps 0.031, i.e. about eps/4);
* ``mart`` (Wang et al. 2020, "Improving adversarial robustness requires revisiting
  misclassified examples"): the attack is cross-entropy PGD from the same start, the update
  minimises the boosted cross-entropy ``CE(f(x_adv), y) - log(1 - max_{k != y} p_k(x_adv))``
  plus ``beta * KL(p(x) || p(x_adv)) * (1 - p_y(x))``, the KL weighted towards misclassified
  examples (``beta`` 6 in the reference ``mart_loss``; the paper uses 5 for ResNet-18).

Both work for every threat model (the step and projection are the threat model's), attack in
the run's BatchNorm mode (``bn_mode``, eval by default: the reference code calls
``model.eval()`` for the attack) with input gradients only, and take ``steps`` (10) and
``alpha`` (eps/4) from the attack section. The weight update runs the clean and adversarial
batches through the model in *one* forward pass (concatenated), so DDP all-reduces once; the
reference code uses two forward passes, so BatchNorm there normalises each half by its own
batch statistics where here it sees both halves together. Label smoothing
(``optimisation.label_smoothing``) applies to the cross-entropy terms of the update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as functional
from torch import nn

from fastrobust.attacks.contract import attack_mode
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import ThreatModel
from fastrobust.settings import check_settings, non_negative, setting
from fastrobust.training.methods import AttackSettings, TrainingMethod, register_method

#: standard deviation of the Gaussian start of both reference implementations
START_STD = 0.001
#: the step size as a share of eps when ``alpha`` is unset (0.007 / 0.031 and 2/255 / 8/255)
STEP_SHARE = 0.25


def kl_per_sample(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per sample from log-probabilities (summed over classes)."""
    return (log_p.exp() * (log_p - log_q)).sum(1)


class DivergenceMethod(TrainingMethod):
    """A K-step attack from a small Gaussian start (not registered itself)."""

    default_steps = 10

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.threat = attack.threat()
        self.steps, self.step_size, self.bn_mode = (
            attack.attack_steps,
            attack.attack_alpha,
            attack.bn_mode,
        )

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        return STEP_SHARE * cast(float, threat.eps)

    def start(self, x: torch.Tensor) -> torch.Tensor:
        """The reference codes' start: ``0.001 * N(0, 1)``, inside the ball and the box."""
        return self.threat.project(START_STD * torch.randn_like(x), x)

    def split_forward(
        self, train_model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean and adversarial logits from one forward pass of both batches."""
        logits = train_model(torch.cat([x, x_adv])).float()
        return logits[: len(x)], logits[len(x) :]

    def describe(self) -> str:
        return (
            f"{self.name} {self.steps}-step {self.threat} alpha={self.step_size:g} "
            f"bn={self.bn_mode}"
        )


@dataclass
class TradesOptions:
    """trades's options."""

    trades_beta: float = setting(6.0, rule=non_negative())
    """trades: weight of the KL term of the update (Zhang et al. 2019: 6 for CIFAR-10)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@register_method("trades")
class Trades(DivergenceMethod):
    """TRADES (Zhang et al. 2019): KL attack, CE + beta * KL update."""

    Options = TradesOptions

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``steps`` ascent steps on ``KL(p(x) || p(x'))`` from the Gaussian start."""
        with attack_mode(model, self.bn_mode), torch.no_grad():
            clean = functional.log_softmax(model(x).float(), 1)

        def divergence(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return kl_per_sample(target, functional.log_softmax(logits.float(), 1))

        return pgd(
            model, x, clean, self.threat, steps=self.steps, step_size=self.step_size,
            start=self.start(x), loss_fn=divergence, bn_mode=self.bn_mode,
        )  # fmt: skip

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.perturb(attack_model, x, y)
        clean, adv = self.split_forward(train_model, x, x_adv)
        robust = kl_per_sample(clean.log_softmax(1), adv.log_softmax(1)).mean()
        return self.criterion(clean, y) + self.options.trades_beta * robust, adv


@dataclass
class MartOptions:
    """mart's options."""

    mart_beta: float = setting(6.0, rule=non_negative())
    """mart: weight of the misclassification-weighted KL term (Wang et al. 2020: 6; their
    ResNet-18 runs use 5)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@register_method("mart")
class Mart(DivergenceMethod):
    """MART (Wang et al. 2020): CE attack, boosted CE + weighted KL update."""

    Options = MartOptions

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``steps`` cross-entropy ascent steps from the Gaussian start."""
        return pgd(
            model, x, y, self.threat, steps=self.steps, step_size=self.step_size,
            start=self.start(x), bn_mode=self.bn_mode,
        )  # fmt: skip

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = self.perturb(attack_model, x, y)
        clean, adv = self.split_forward(train_model, x, x_adv)
        adv_probs = adv.softmax(1)
        # the most likely wrong class of each adversarial example
        wrong = adv_probs.masked_fill(functional.one_hot(y, adv.shape[1]).bool(), -1.0)
        margin = -torch.log(1.0001 - wrong.max(1).values + 1e-12)
        boosted = self.criterion(adv, y) + margin.mean()
        clean_log = clean.log_softmax(1)
        true_prob = clean_log.exp().gather(1, y[:, None]).squeeze(1)
        kl = kl_per_sample(clean_log, torch.log(adv_probs + 1e-12))
        robust = (kl * (1.0000001 - true_prob)).mean()
        return boosted + self.options.mart_beta * robust, adv
