"""Training methods that resist catastrophic overfitting: ``n-fgsm``, ``gradalign``, ``free``
and ``curriculum``, registered next to ``standard``, ``fast`` and ``pgd``.

Single-step training with a random start can collapse: within an epoch PGD accuracy falls to
about zero while accuracy under the single-step attack keeps rising (Wong et al. 2020;
Andriushchenko & Flammarion 2020). These methods keep the cost of one or a few attack steps
and avoid it; their maths lives in :mod:`fastrobust.training.perturbations`. Each works for
every threat model and goes through the same engine as the others (DDP, AMP, resume, the
overfitting monitor, timing); docs/catastrophic_overfitting.md compares them.

* ``n-fgsm`` (de Jorge et al. 2022): noise in a ball ``noise_factor`` times eps (default 2
  for L-inf as in the paper, 1 for L2), one step of size eps (``alpha``), no projection back
  to the eps ball.
* ``gradalign`` (Andriushchenko & Flammarion 2020): the ``fast`` step plus
  ``lambda * (1 - cos(grad_x L(x), grad_x L(x + eta)))`` (double backpropagation).
* ``free`` (Shafahi et al. 2019): each batch replayed ``replays`` times; one backward pass per
  replay updates the weights and, through the input gradient it also yields, the perturbation,
  which is carried over to the next replay and the next batch. The run lasts
  ``ceil(epochs / replays)`` epochs, so the number of passes (weight updates) matches.
* ``curriculum`` (Goodwin et al. 2020, future work): ``fast`` 1-step training whose attack
  grows to K-step PGD (``steps``, default 7) on a schedule: ``linear`` (1 step in the first
  epoch to K in the last), ``switch`` (K steps from ``curriculum_switch`` of the epochs on) or
  ``adaptive`` (K steps once the fixed-batch PGD accuracy has not improved for
  ``curriculum_patience`` epochs, or has collapsed). Each epoch's attack is in metrics.jsonl.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import nn

from fastrobust.attacks.contract import pgd_step_size, trainable_module
from fastrobust.attacks.threat import ThreatModel
from fastrobust.settings import at_least, check_settings, in_range, non_negative, setting
from fastrobust.training.adversaries import Adversary
from fastrobust.training.methods import AttackSettings, Fast, TrainingMethod, register_method
from fastrobust.training.perturbations import (
    carry_perturbation,
    free_update,
    gradalign_default_lambda,
    gradalign_terms,
    nfgsm_default_noise_factor,
    nfgsm_perturbation,
)

log = logging.getLogger(__name__)

#: how curriculum's attack grows (:data:`CURRICULUM_SCHEDULES`)
CurriculumSchedule = Literal["linear", "switch", "adaptive"]


@dataclass
class NoiseFGSMOptions:
    """n-fgsm's options."""

    noise_factor: float | None = setting(None, rule=non_negative())
    """n-fgsm: radius of the uniform noise as a multiple of eps; default 2 for Linf (de Jorge
    et al. 2022), 1 for L2 (docs/catastrophic_overfitting.md)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@dataclass
class GradAlignOptions:
    """gradalign's options."""

    gradalign_lambda: float | None = setting(None, rule=non_negative())
    """gradalign: weight of the alignment penalty; default the paper's for the eps (L-inf:
    0.02*10**(255*eps/8), 0.2 at 8/255, at most 2.0; L2: 0.2)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@dataclass
class FreeOptions:
    """free's options."""

    replays: int = setting(4, rule=at_least(1))
    """free: weight updates per batch (m); the run lasts ceil(epochs / replays) epochs"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@dataclass
class CurriculumOptions:
    """curriculum's options."""

    curriculum: CurriculumSchedule = "linear"
    """curriculum: how the attack grows from 1 step to attack.steps (default 7): linear |
    switch (at curriculum_switch) | adaptive (when fixed-batch PGD accuracy stalls or
    collapses)"""
    curriculum_switch: float = setting(0.5, rule=in_range(0, 1, low_open=True))
    """curriculum switch: fraction of the epochs trained with 1 step before K steps"""
    curriculum_patience: int = setting(3, rule=at_least(1))
    """curriculum adaptive: epochs without a gain in fixed-batch PGD accuracy before K steps"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


class SingleEpsStep(TrainingMethod):
    """A method whose perturbation moves by one step of size eps by default (``alpha``)."""

    default_steps = 1
    fixed_steps = 1

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        return cast(float, threat.eps)

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.threat = attack.threat()
        self.step_size = attack.attack_alpha


@register_method("n-fgsm")
class NoiseFGSM(SingleEpsStep):
    """N-FGSM (de Jorge et al. 2022): large noise, one eps-sized step, no projection to eps."""

    Options = NoiseFGSMOptions

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        given = self.options.noise_factor
        self.noise_factor = nfgsm_default_noise_factor(self.threat) if given is None else given
        self.bn_mode = attack.bn_mode

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nfgsm_perturbation(
            model,
            x,
            y,
            self.threat,
            noise_factor=self.noise_factor,
            step_size=self.step_size,
            bn_mode=self.bn_mode,
        )

    def describe(self) -> str:
        return (
            f"N-FGSM {self.threat} noise {self.noise_factor:g}*eps step {self.step_size:g} "
            f"bn={self.bn_mode}"
        )


@register_method("gradalign")
class GradAlign(TrainingMethod):
    """The ``fast`` step plus GradAlign's gradient-alignment penalty (Andriushchenko &
    Flammarion 2020); ``gradalign_lambda`` None takes the paper's weight for the eps.

    The penalty's noise ``eta`` is the fast step's random start (uniform in the eps ball), so
    the differentiable gradient at ``x + eta`` the penalty needs is also the step's direction:
    one training step costs two input gradients, one double backward and the weight update.
    """

    default_steps = 1
    fixed_steps = 1
    Options = GradAlignOptions

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        return Fast.default_step_size(threat, steps)

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.threat = attack.threat()
        self.step_size = attack.attack_alpha
        self.bn_mode = attack.bn_mode
        given = self.options.gradalign_lambda
        self.weight = gradalign_default_lambda(self.threat) if given is None else given

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach()
        eta = self.threat.sample(x)
        # torch.compile cannot differentiate a gradient twice: the penalty runs uncompiled, on
        # the module whose weights it trains (not the compiled attack model's detached ones)
        penalty_model = cast(nn.Module, trainable_module(attack_model))
        penalty, grad = gradalign_terms(penalty_model, x, y, eta, bn_mode=self.bn_mode)
        delta = self.threat.project(self.threat.step(eta, grad, self.step_size), x)
        logits = train_model(x + delta)
        return self.criterion(logits, y) + self.weight * penalty, logits

    def describe(self) -> str:
        return (
            f"GradAlign lambda={self.weight:g} + 1-step {self.threat} alpha={self.step_size:g} "
            f"bn={self.bn_mode}"
        )


@register_method("free")
class Free(SingleEpsStep):
    """Free adversarial training (Shafahi et al. 2019): ``replays`` weight updates per batch,
    the perturbation updated from each update's own input gradient and carried on."""

    Options = FreeOptions

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.delta: torch.Tensor | None = None
        self._x: torch.Tensor | None = None

    @classmethod
    def updates_per_batch(cls, options: FreeOptions) -> int:
        return options.replays

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        replay = x is self._x  # the same batch again: its update already projected delta
        self._apply_pending_update()
        if not replay or self.delta is None:  # a new batch: carry delta over, projected for it
            self.delta = carry_perturbation(self.threat, self.delta, x)
        delta, self._x = self.delta.requires_grad_(True), x
        logits = train_model(x + delta)  # the weight update's backward also fills delta.grad
        return self.criterion(logits, y), logits

    def _apply_pending_update(self) -> None:
        """Move the perturbation along the input gradient of the last backward pass."""
        if self.delta is None or self.delta.grad is None or self._x is None:
            return
        grad = torch.nan_to_num(self.delta.grad, nan=0.0, posinf=0.0, neginf=0.0)  # fp16 overflow
        self.delta = free_update(self.threat, self.delta.detach(), grad, self._x, self.step_size)

    def state_dict(self) -> dict[str, Any]:
        self._apply_pending_update()
        return {"delta": None if self.delta is None else self.delta.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.delta = state.get("delta")
        self._x = None

    def describe(self) -> str:
        return f"free {self.threat} {self.replays} replays step {self.step_size:g}"


def _linear(method: Curriculum, epoch: int, total: int) -> int:
    """1 step in the first epoch, growing linearly to K in the last."""
    return 1 + int((method.final_steps - 1) * epoch / max(total - 1, 1) + 0.5)


def _switch(method: Curriculum, epoch: int, total: int) -> int:
    """1 step before ``curriculum_switch * total`` epochs, K from there on."""
    return method.final_steps if epoch >= method.switch * total else 1


def _adaptive(method: Curriculum, epoch: int, total: int) -> int:
    """1 step until the fixed-batch PGD accuracy stalls or collapses, K from then on."""
    return method.final_steps if method.switched else 1


#: curriculum schedules: ``(method, epoch (0-based), total epochs) -> attack steps``
CURRICULUM_SCHEDULES: dict[CurriculumSchedule, Callable[[Curriculum, int, int], int]] = {
    "linear": _linear,
    "switch": _switch,
    "adaptive": _adaptive,
}


@register_method("curriculum")
class Curriculum(TrainingMethod):
    """Fast 1-step training growing to K-step PGD on a schedule (:data:`CURRICULUM_SCHEDULES`)."""

    default_steps = 7
    Options = CurriculumOptions

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.threat = attack.threat()
        self.schedule = self.options.curriculum
        self.final_steps = attack.attack_steps
        self.alpha = attack.alpha
        self.bn_mode = attack.bn_mode
        self.switch = self.options.curriculum_switch
        self.patience = self.options.curriculum_patience
        self.best = -1.0
        self.stalled = 0
        self.switched = False
        self.adversary = self._adversary(1)

    def _adversary(self, steps: int) -> Adversary:
        if self.alpha is not None:
            alpha = self.alpha
        elif steps == 1:
            alpha = Fast.default_step_size(self.threat, 1)
        else:
            alpha = pgd_step_size(cast(float, self.threat.eps), steps)
        return Adversary(self.threat, steps, alpha, self.bn_mode)

    def start_epoch(self, epoch: int, total: int) -> None:
        steps = CURRICULUM_SCHEDULES[self.schedule](self, epoch, total)
        if steps != self.adversary.steps:
            self.adversary = self._adversary(steps)

    @classmethod
    def needs_overfitting_check_every_epoch(cls, options: CurriculumOptions) -> bool:
        return options.curriculum == "adaptive"

    def end_epoch(self, check_acc: float | None, collapsed: bool) -> None:
        if check_acc is None:
            if self.schedule == "adaptive" and not self.switched:
                log.warning("curriculum adaptive needs the overfitting check; it stays at 1 step")
            return
        if check_acc > self.best + 0.01:
            self.best, self.stalled = check_acc, 0
        else:
            self.stalled += 1
        if collapsed or self.stalled >= self.patience:
            self.switched = True

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.adversary(model, x, y)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "stalled": self.stalled, "switched": self.switched}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state.get("best", -1.0))
        self.stalled = int(state.get("stalled", 0))
        self.switched = bool(state.get("switched", False))

    def describe(self) -> str:
        return f"curriculum {self.schedule}: {self.adversary.describe()}"
