"""Training methods: what each batch becomes before the weight update, registered by name.

A method is a :class:`TrainingMethod` subclass registered with :func:`register_method`; the
config's ``method`` field picks it by name and the trainer only calls its interface
(:meth:`~TrainingMethod.loss`), so adding a method is one new class in this module (or any
module imported before the config is built). See docs/architecture.md.

* ``standard``: the clean batch;
* ``fast``: one random-start step (Goodwin et al. 2020, Algorithm 1 for L2; FGSM with random
  start, Wong et al. 2020, for L-inf), step size ``fast_alpha_factor * eps`` of the norm;
* ``pgd``: K random-start steps with ``alpha = 2.5 * eps / K`` (Madry et al. 2018).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import torch
import torch.nn.functional as functional
from torch import nn

from fastrobust.attacks.contract import pgd_step_size
from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError
from fastrobust.training.adversaries import Adversary

log = logging.getLogger(__name__)


class AttackSettings(Protocol):
    """What a method reads from the config's attack section (``training.config.AttackConfig``).

    A protocol rather than an import: the config validates method names against this module's
    registry, so this module must not import the config back (docs/architecture.md)."""

    method: str
    bn_mode: str
    alpha: float | None
    noise_factor: float | None
    gradalign_lambda: float | None
    replays: int
    curriculum: str
    curriculum_switch: float
    curriculum_patience: int

    @property
    def attack_steps(self) -> int: ...

    @property
    def attack_alpha(self) -> float: ...

    def threat(self) -> ThreatModel: ...


class TrainingMethod:
    """How one training batch is perturbed and what loss its weight update minimises.

    Subclasses set the class attributes and override :meth:`perturb` (and, for methods with
    another objective, :meth:`loss`). ``attack_model`` is the unwrapped module (input
    gradients only; under DDP no all-reduce), ``train_model`` the one the weights are
    updated through (possibly DDP-wrapped or compiled).

    The engine also calls, for every method alike: :meth:`epochs_to_run` (how many epochs the
    configured epoch budget means), :meth:`start_epoch` before each epoch, ``replays`` weight
    updates per batch, :meth:`end_epoch` with the overfitting monitor's reading after each
    epoch, and :meth:`state_dict` / :meth:`load_state_dict` to save and resume what the method
    carries between epochs. The defaults do nothing (one update per batch, no state).
    """

    #: registry name (the config's ``method``), set by :func:`register_method`
    name: ClassVar[str] = ""
    #: whether batches are perturbed (False: nothing can collapse, no attack steps)
    perturbs: ClassVar[bool] = True
    #: attack steps per batch when the config leaves ``steps`` unset
    default_steps: ClassVar[int] = 1
    #: the only step count the method is defined for (None: any ``steps`` >= 1 is allowed)
    fixed_steps: ClassVar[int | None] = None
    #: validation metric whose highest value picks the best epoch
    best_metric: ClassVar[str] = "val_adv_acc"

    def __init__(self, attack: AttackSettings | None = None) -> None:
        self.attack = attack
        #: weight updates per batch (free adversarial training replays each batch)
        self.replays = 1

    def epochs_to_run(self, epochs: int) -> int:
        """Epochs the run lasts for a budget of ``epochs`` passes."""
        return epochs

    def start_epoch(self, epoch: int, total: int) -> None:
        """Called before epoch ``epoch`` (0-based) of ``total``."""

    def end_epoch(self, check_acc: float | None, collapsed: bool) -> None:
        """Called after each epoch with the fixed-batch PGD accuracy (None: not measured) and
        whether the overfitting monitor saw a collapse; the same values on every rank."""

    @property
    def needs_overfitting_check(self) -> bool:
        """Whether :meth:`end_epoch` must get the check's reading for the method to work."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """What the method carries between epochs (saved in ``last.pt``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output on resume."""

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        """Attack step size when the config leaves ``alpha`` unset (PGD's ``2.5*eps/K``)."""
        return pgd_step_size(threat.eps, steps)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch the weights are trained on (``x`` itself for clean training)."""
        return x

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of the weight update: cross-entropy on the perturbed batch."""
        logits = train_model(self.perturb(attack_model, x, y))
        return functional.cross_entropy(logits.float(), y), logits

    def describe(self) -> str:
        return self.name


METHODS: dict[str, type[TrainingMethod]] = {}


def register_method(name: str) -> Callable[[type[TrainingMethod]], type[TrainingMethod]]:
    """Class decorator adding a training method under ``name`` (warns when it replaces one)."""

    def wrap(cls: type[TrainingMethod]) -> type[TrainingMethod]:
        if name in METHODS and METHODS[name] is not cls:
            log.warning("training method %r registered twice; the later one is used", name)
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def method_names() -> list[str]:
    return list(METHODS)


def method_class(name: str) -> type[TrainingMethod]:
    """The registered method class called ``name``, or a ConfigError listing the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def build_method(attack: AttackSettings) -> TrainingMethod:
    """The training method a config's attack section asks for."""
    return method_class(attack.method)(attack)


@register_method("standard")
class Standard(TrainingMethod):
    """Clean training: no perturbation (the best epoch is picked by clean accuracy, since
    adversarial accuracy is ~0 throughout and would pick an untrained early epoch)."""

    perturbs = False
    default_steps = 0
    best_metric = "val_clean_acc"

    def describe(self) -> str:
        return "standard (no attack)"


class ProjectedGradientMethod(TrainingMethod):
    """Train on a random-start PGD perturbation of each batch (not registered itself)."""

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.adversary = Adversary(
            threat=attack.threat(),
            steps=attack.attack_steps,
            step_size=attack.attack_alpha,
            bn_mode=attack.bn_mode,  # type: ignore[arg-type]
        )

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.adversary(model, x, y)

    def describe(self) -> str:
        return self.adversary.describe()


@register_method("fast")
class Fast(ProjectedGradientMethod):
    """Fast adversarial training: one random-start step (Goodwin et al. 2020, Algorithm 1)."""

    default_steps = 1
    fixed_steps = 1

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        return threat.fast_alpha_factor * threat.eps


@register_method("pgd")
class PGD(ProjectedGradientMethod):
    """K-step PGD adversarial training (Madry et al. 2018), the paper's baseline."""

    default_steps = 7


def steps_label(attack_steps: int) -> str:
    """The paper's name of a training method by its attack steps (Table I, Figure 1):
    ``standard`` (0), ``fast`` (1), ``pgdK`` (K)."""
    if attack_steps == Standard.default_steps:
        return Standard.name
    if attack_steps == Fast.fixed_steps:
        return Fast.name
    return f"{PGD.name}{attack_steps}"
