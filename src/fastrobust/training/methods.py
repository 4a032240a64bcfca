"""Training methods: what each batch becomes before the weight update, registered by name.

A method is a :class:`TrainingMethod` subclass registered with :func:`register_method`; the
config's ``method`` field picks it by name and the trainer only calls its interface
(:meth:`~TrainingMethod.loss`) and asks it what it needs (:meth:`~TrainingMethod.updates_per_batch`,
:meth:`~TrainingMethod.needs_overfitting_check_every_epoch`), so adding a method is one new
class (in any module imported before the config is built) and its registration. A method's
own settings are a settings dataclass (:mod:`fastrobust.settings`) named by its ``Options``
class attribute: the config's attack section accepts them (``noise_factor: 2``), the command
line gets a flag per field (``--noise-factor``), and the config records them. See
docs/architecture.md.

* ``standard``: the clean batch;
* ``fast``: one random-start step (Goodwin et al. 2020, Algorithm 1 for L2; FGSM with random
  start, Wong et al. 2020, for L-inf), step size ``fast_alpha_factor * eps`` of the norm;
* ``pgd``: K random-start steps with ``alpha = 2.5 * eps / K`` (Madry et al. 2018).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, cast

import torch
import torch.nn.functional as functional
from torch import nn

from fastrobust.attacks.contract import BNMode, pgd_step_size
from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError
from fastrobust.training.adversaries import Adversary

log = logging.getLogger(__name__)


class AttackSettings(Protocol):
    """What a method reads from the config's attack section (``training.config.AttackConfig``).

    A protocol rather than an import: the config validates method names against this module's
    registry, so this module must not import the config back (docs/architecture.md)."""

    method: str
    bn_mode: BNMode
    alpha: float | None
    options: Any
    """the method's own options (an instance of its ``Options`` class)"""

    @property
    def attack_steps(self) -> int: ...

    @property
    def attack_alpha(self) -> float: ...

    def threat(self) -> ThreatModel: ...


@dataclass
class NoOptions:
    """A method without options of its own."""


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
    carries between epochs. The defaults do nothing (one update per batch, no state). Before
    anything is built, the config and the trainer ask the class, from the method's options
    alone: :meth:`updates_per_batch`, :meth:`epochs_for_budget` and
    :meth:`needs_overfitting_check_every_epoch`.
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
    #: the settings dataclass of the method's own options (its fields, docstrings and rules
    #: become config keys of the attack section and ``train`` flags)
    Options: ClassVar[type] = NoOptions
    #: the norms the method is defined for (None: every norm) and, where it is not None, why
    #: the others are refused (the config refuses them in one line, before any work)
    norms: ClassVar[tuple[str, ...] | None] = None
    norms_reason: ClassVar[str] = ""
    #: whether the method needs each batch's sample indices (:meth:`start_batch`): it keeps a
    #: buffer per training sample
    needs_sample_indices: ClassVar[bool] = False

    def __init__(self, attack: AttackSettings | None = None) -> None:
        self.attack = attack
        #: this method's options (an ``Options`` instance; its defaults without a config)
        self.options: Any = attack.options if attack is not None else self.Options()
        #: weight updates per batch (free adversarial training replays each batch)
        self.replays = self.updates_per_batch(self.options)
        #: label smoothing of the weight update's cross-entropy (the run's
        #: ``optimisation.label_smoothing``, set by the trainer; attacks keep their own loss)
        self.label_smoothing = 0.0

    # -- what the trainer asks before it builds anything ---------------------------------------
    @classmethod
    def updates_per_batch(cls, options: Any) -> int:
        """Weight updates per training batch with ``options`` (1; free replays each batch)."""
        return 1

    @classmethod
    def epochs_for_budget(cls, options: Any, epochs: int) -> int:
        """Epochs a run with ``options`` lasts for a budget of ``epochs`` passes."""
        return math.ceil(epochs / cls.updates_per_batch(options))

    @classmethod
    def needs_overfitting_check_every_epoch(cls, options: Any) -> bool:
        """Whether the method, with ``options``, acts on the overfitting check after every
        epoch (the check's interval must then be 1)."""
        return False

    @classmethod
    def check_fits(cls, options: Any, n_train: int, image_shape: tuple[int, ...]) -> None:
        """Refuse (ConfigError) a run whose training set the method cannot serve, before
        anything is built: a method with a per-sample buffer checks its size here."""

    def start_batch(self, indices: torch.Tensor | None, dataset_size: int) -> None:
        """Called before each training batch with the batch's sample indices in the training
        set (None where the loader does not know them) and the training set's size."""

    def epochs_to_run(self, epochs: int) -> int:
        """Epochs the run lasts for a budget of ``epochs`` passes."""
        return self.epochs_for_budget(self.options, epochs)

    def start_epoch(self, epoch: int, total: int) -> None:
        """Called before epoch ``epoch`` (0-based) of ``total``."""

    def end_epoch(self, check_acc: float | None, collapsed: bool) -> None:
        """Called after each epoch with the fixed-batch PGD accuracy (None: not measured) and
        whether the overfitting monitor saw a collapse; the same values on every rank."""

    @property
    def needs_overfitting_check(self) -> bool:
        """Whether :meth:`end_epoch` must get the check's reading for the method to work."""
        return self.needs_overfitting_check_every_epoch(self.options)

    def state_dict(self) -> dict[str, Any]:
        """What the method carries between epochs (saved in ``last.pt``)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output on resume."""

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        """Attack step size when the config leaves ``alpha`` unset (PGD's ``2.5*eps/K``)."""
        return pgd_step_size(cast(float, threat.eps), steps)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch the weights are trained on (``x`` itself for clean training)."""
        return x

    def criterion(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The weight update's mean cross-entropy, label-smoothed by ``label_smoothing``
        (Szegedy et al. 2016; the FastAT Benchmark trains every method with it)."""
        return functional.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, logits)`` of the weight update: cross-entropy on the perturbed batch."""
        logits = train_model(self.perturb(attack_model, x, y))
        return self.criterion(logits, y), logits

    def describe(self) -> str:
        return self.name


METHODS: dict[str, type[TrainingMethod]] = {}


def register_method(name: str) -> Callable[[type[TrainingMethod]], type[TrainingMethod]]:
    """Class decorator adding a training method under ``name`` (warns when it replaces one).

    The method's option names join the attack section's keys, so each must differ from every
    config field and, where another method has an option of the same name, mean the same
    (the same type)."""

    def wrap(cls: type[TrainingMethod]) -> type[TrainingMethod]:
        _check_options(name, cls.Options)
        if name in METHODS and METHODS[name] is not cls:
            log.warning("training method %r registered twice; the later one is used", name)
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def unregister_method(name: str) -> None:
    """Remove the method ``name`` (tests that register a method of their own)."""
    METHODS.pop(name, None)


def _check_options(name: str, options: type) -> None:
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"method {name}: options must be a dataclass, got {options!r}")
    for f in dataclasses.fields(options):
        for other, cls in METHODS.items():
            theirs = {g.name: g.type for g in dataclasses.fields(cls.Options)}
            if other != name and f.name in theirs and theirs[f.name] != f.type:
                raise TypeError(
                    f"method {name}: option {f.name} is also method {other}'s, of another type"
                )


def method_names() -> list[str]:
    return list(METHODS)


def option_owners() -> dict[str, list[str]]:
    """Option name -> the registered methods that have it."""
    owners: dict[str, list[str]] = {}
    for name, cls in METHODS.items():
        for f in dataclasses.fields(cls.Options):
            owners.setdefault(f.name, []).append(name)
    return owners


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
            bn_mode=attack.bn_mode,
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
        return threat.fast_alpha_factor * cast(float, threat.eps)


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
