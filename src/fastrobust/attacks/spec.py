"""Attacks as registered specs: one record per attack says everything evaluation asks of it.

An :class:`AttackSpec` holds how to run an attack (one run from a given start, or a
minimal-perturbation run whose result answers every eps), whether the robustness curve restarts
it or runs it once over the whole eps grid with one radius per row, how many classes it needs,
whether it needs logits, and what it spends (the budget written into reports and the input
gradients counted per sample). The cascade (:mod:`fastrobust.evaluation.curve`), the input
checks and the report read these fields instead of testing attack names, so adding an attack is
its module plus one :func:`register_attack` call (docs/architecture.md). The built-in attacks
are registered in :mod:`fastrobust.attacks.registry`; like timm's ``register_model``, a name
registered twice is refused unless ``replace=True`` says it is meant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastrobust.attacks.contract import PGD_STEP_FACTOR, BNMode, Model, pgd_step_size
from fastrobust.attacks.fab import MinimalPerturbation
from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError


@dataclass(frozen=True)
class RunSettings:
    """What one run of a named attack may spend, and how it runs the model."""

    steps: int
    """iterations (input gradients, times ``eot``; per target for APGD-T and FAB-T)"""
    step_size_factor: float = PGD_STEP_FACTOR
    """PGD's step size as a multiple of ``eps / steps`` (attacks with their own schedule ignore it)"""
    bn_mode: BNMode = "eval"
    targets: int = 9
    """target classes of APGD-T and FAB-T (clipped to classes - 1)"""
    queries: int = 5000
    """Square's queries (forward passes)"""
    eot: int = 1
    """gradients averaged per APGD step (expectation over transformation, randomised models)"""

    def __post_init__(self) -> None:
        for name in ("steps", "targets", "queries", "eot"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def pgd_step_size(self, eps: float) -> float:
        """PGD's step size at radius ``eps`` (:func:`fastrobust.attacks.contract.pgd_step_size`)."""
        return pgd_step_size(eps, self.steps, self.step_size_factor)


#: ``attack(model, x, y, threat, start, settings, generator) -> x_adv``: one run from the
#: perturbation ``start``; ``generator`` (seeded) for attacks that draw more randomness
NamedAttack = Callable[
    [
        Model,
        torch.Tensor,
        torch.Tensor,
        ThreatModel,
        torch.Tensor,
        RunSettings,
        torch.Generator | None,
    ],
    torch.Tensor,
]
#: ``attack(model, x, y, threat, settings, enough) -> MinimalPerturbation``: an attack looking
#: for the smallest perturbation, whose one run answers every eps (a sample leaves once its
#: perturbation is ``<= enough``, per sample)
MinimalAttack = Callable[
    [Model, torch.Tensor, torch.Tensor, ThreatModel, RunSettings, torch.Tensor | float],
    MinimalPerturbation,
]
#: what one attack may spend per sample and eps, as reports write it (``{"steps": 20, ...}``)
Budget = dict[str, int | float | str]


@dataclass(frozen=True)
class AttackSpec:
    """One attack as the robustness curve runs it: give ``run`` or ``minimal``, not both."""

    name: str
    """what ``attacks=`` and ``eval --attack`` call it (lower case)"""
    budget: Callable[[RunSettings, int], Budget]
    """``budget(settings, restarts)``: what it may spend per sample and eps, for reports"""
    gradients: Callable[[RunSettings], int]
    """``gradients(settings)``: input gradients one run may compute per sample (upper bound)"""
    run: NamedAttack | None = None
    """one run from a start, at one eps (or one radius per row)"""
    minimal: MinimalAttack | None = None
    """a minimal-perturbation run: the curve runs it once and settles every eps from its norms"""
    restartable: bool = False
    """its restarts are the curve's ``restarts``, and ``steps x restarts`` describes its budget
    (others run once: per target, or once as AutoAttack runs Square)"""
    per_row_eps: bool = False
    """takes a threat model with one radius per row: ending a cascade, it runs once over every
    ``(point, eps)`` pair of the grid still robust (:meth:`ThreatModel.per_row`)"""
    targeted: bool = False
    """attacks ``settings.targets`` target classes (clipped to the model's classes - 1)"""
    min_classes: int = 1
    """the fewest classes the model may have"""
    min_classes_reason: str = ""
    """why it needs ``min_classes`` (for the error message), e.g. ``"targeted DLR loss"``"""
    needs_logits: bool = False
    """refuse a model that outputs probabilities (AutoAttack's attacks)"""

    def __post_init__(self) -> None:
        if (self.run is None) == (self.minimal is None):
            raise ConfigError(f"attack {self.name!r}: give exactly one of run and minimal")
        if not self.name or self.name != self.name.strip().lower():
            raise ConfigError(f"attack name {self.name!r} must be non-empty and lower case")

    def run_once(
        self,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        start: torch.Tensor,
        settings: RunSettings,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """One run at ``threat``'s eps from ``start`` -> ``x_adv``. A minimal-perturbation attack
        answers with its perturbation where that is within eps, else its projection (which
        may not fool)."""
        if self.run is not None:
            return self.run(model, x, y, threat, start, settings, generator)
        assert self.minimal is not None  # __post_init__: one of the two
        found = self.minimal(model, x, y, threat, settings, threat.eps)
        return x + threat.project(found.delta, x)

    def check_classes(self, classes: int) -> None:
        """ConfigError unless a model with ``classes`` outputs can be attacked by it."""
        if classes < self.min_classes:
            why = f" ({self.min_classes_reason})" if self.min_classes_reason else ""
            raise ConfigError(
                f"{self.name}{why} needs a model with at least {self.min_classes} classes"
            )


_SPECS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec, *, replace: bool = False) -> AttackSpec | None:
    """Make ``spec`` runnable by name (cascade, ``eval --attack``, reports).

    A name registered already is refused unless ``replace``; returns the spec it replaced.
    """
    previous = _SPECS.get(spec.name)
    if previous is not None and not replace:
        raise ConfigError(f"attack {spec.name!r} is registered already")
    _SPECS[spec.name] = spec
    return previous


def unregister_attack(name: str) -> AttackSpec:
    """Remove attack ``name`` (a test's toy attack, in its teardown); returns its spec."""
    if name not in _SPECS:
        raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(_SPECS)}")
    return _SPECS.pop(name)


def attack_spec(name: str) -> AttackSpec:
    """The spec registered as ``name`` (ConfigError naming the known ones if none)."""
    spec = _SPECS.get(name)
    if spec is None:
        raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(_SPECS)}")
    return spec


def attack_names() -> tuple[str, ...]:
    """Every registered attack, in registration order."""
    return tuple(_SPECS)


def is_attack(name: str) -> bool:
    """Whether ``name`` is a registered attack."""
    return name in _SPECS
