"""Attacks by name, as evaluation runs them: one run from a given start, or seeded restarts.

Every entry has the signature of :class:`NamedAttack`; add a new attack here (and see
docs/architecture.md). :func:`run_attack` projects whatever an attack returns back into the
threat model, so a buggy attack still cannot report a perturbation outside it.
:class:`SeededRuns` feeds :func:`fastrobust.attacks.restarts.worst_case_over_restarts` with runs
from seeded random starts: restart ``r`` draws the starts of the whole batch from the stream
``key + (r,)`` and a sample takes its own row, so its start does not depend on which of its
neighbours are still attacked (the robustness curve of Goodwin et al. 2020, Figure 2, and its
gradient-masking checks rely on this).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastrobust.attacks.apgd import apgd, apgd_targeted
from fastrobust.attacks.contract import (
    PGD_STEP_FACTOR,
    BNMode,
    Model,
    attack_mode,
    cross_entropy_per_sample,
    is_fooled,
    pgd_step_size,
)
from fastrobust.attacks.fab import MinimalPerturbation, fab
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.restarts import AttackRun, seeded_generator
from fastrobust.attacks.square import square
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
    [Model, torch.Tensor, torch.Tensor, ThreatModel, RunSettings, torch.Tensor],
    MinimalPerturbation,
]

#: minimum-norm attacks by name (Croce & Hein 2020, FAB; ``fab-t`` is AutoAttack's FAB-T)
MINIMAL_ATTACKS: dict[str, MinimalAttack] = {
    "fab-t": lambda model, x, y, threat, run, enough: fab(
        model, x, y, threat, targets=run.targets, steps=run.steps, enough=enough,
        bn_mode=run.bn_mode,
    ),
    "fab": lambda model, x, y, threat, run, enough: fab(
        model, x, y, threat, targeted=False, steps=run.steps, enough=enough, bn_mode=run.bn_mode
    ),
}  # fmt: skip


def _within_eps(name: str) -> NamedAttack:
    """A minimum-norm attack at one eps: its perturbation where it is within eps (else the
    projection of it, which may not fool)."""

    def run(model, x, y, threat, start, settings, generator):  # noqa: ANN001, ANN202
        found = MINIMAL_ATTACKS[name](model, x, y, threat, settings, threat.eps)
        return x + threat.project(found.delta, x)

    return run


#: attacks a curve can run, alone or as a cascade in the given order
ATTACKS: dict[str, NamedAttack] = {
    "pgd": lambda model, x, y, threat, start, run, _g: pgd(
        model, x, y, threat, steps=run.steps, step_size=run.pgd_step_size(threat.eps),
        start=start, bn_mode=run.bn_mode,
    ),
    "apgd-ce": lambda model, x, y, threat, start, run, _g: apgd(
        model, x, y, threat, steps=run.steps, loss="ce", start=start, bn_mode=run.bn_mode,
        eot=run.eot,
    ),
    "apgd-dlr": lambda model, x, y, threat, start, run, _g: apgd(
        model, x, y, threat, steps=run.steps, loss="dlr", start=start, bn_mode=run.bn_mode,
        eot=run.eot,
    ),
    "apgd-t": lambda model, x, y, threat, start, run, _g: apgd_targeted(
        model, x, y, threat, targets=run.targets, steps=run.steps, start=start,
        bn_mode=run.bn_mode, eot=run.eot,
    ),
    # Square draws its own start (stripes / tiles) and windows from the seeded generator
    "square": lambda model, x, y, threat, _start, run, generator: square(
        model, x, y, threat, queries=run.queries, generator=generator, bn_mode=run.bn_mode
    ),
    **{name: _within_eps(name) for name in MINIMAL_ATTACKS},
}  # fmt: skip

#: attacks that take a threat model with one radius per row
#: (:meth:`~fastrobust.attacks.threat.ThreatModel.per_row`): the robustness curve runs one of
#: these, when it ends the cascade, over the ``(point, eps)`` pairs of its whole grid still
#: robust, several eps sharing a batch (one forward per query for them all, Square's cost
#: being its per-query forwards; Andriushchenko et al. 2020)
GRID_ATTACKS = ("square",)

#: attacks whose restarts are the curve's ``restarts`` (the others have their own per-target
#: runs, or, like Square, AutoAttack runs them once)
RESTARTABLE = ("pgd", "apgd-ce", "apgd-dlr")

#: AutoAttack's versions (Croce & Hein 2020) as cascades with their budgets: ``standard`` for
#: deterministic models, ``rand`` (with EOT) for randomised ones
VERSIONS: dict[str, tuple[tuple[str, ...], RunSettings, int]] = {
    "autoattack": (("apgd-ce", "apgd-t", "fab-t", "square"), RunSettings(100), 1),
    "autoattack-rand": (("apgd-ce", "apgd-dlr"), RunSettings(100, eot=20), 1),
}


def budget(name: str, settings: RunSettings, restarts: int) -> dict[str, int | float | str]:
    """What attack ``name`` may spend per sample and eps, for reports."""
    if name == "square":
        return {"queries": settings.queries, "p_init": 0.8}
    spend: dict[str, int | float | str] = {"steps": settings.steps}
    if name in ("apgd-t", "fab-t"):
        spend["targets"] = settings.targets
    if name in RESTARTABLE:
        spend["restarts"] = restarts
    if name.startswith("apgd"):
        spend["eot"] = settings.eot
    if name == "pgd":
        spend["step_size"] = f"{settings.step_size_factor:g}*eps/steps"
    return spend


def gradients_per_sample(name: str, settings: RunSettings) -> int:
    """Input gradients one run of ``name`` may compute per sample (an upper bound)."""
    if name == "square":
        return 0
    per_target = settings.targets if name in ("apgd-t", "fab-t") else 1
    return settings.steps * settings.eot * per_target


def run_attack(
    name: str,
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    start: torch.Tensor,
    steps: int,
    step_size_factor: float = PGD_STEP_FACTOR,
    bn_mode: BNMode = "eval",
) -> torch.Tensor:
    """One run of attack ``name`` from the perturbation ``start``; returns a valid delta."""
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    settings = RunSettings(steps, step_size_factor, bn_mode)
    x_adv = ATTACKS[name](model, x, y, threat, start, settings, None)
    return threat.project(x_adv - x, x)  # a buggy attack still cannot leave the threat model


class SeededRuns:
    """``run_once(active, restart)``: attack ``name`` on the samples ``active`` from seeded starts.

    Counts the input gradients it spends in ``gradients``; ``on_restart(restart)``, when given,
    is told before each run (a progress bar). The loss it reports is the cross-entropy at the
    result, whatever the attack's own loss. ``threat`` may have one radius per row of ``x``
    (for an attack of :data:`GRID_ATTACKS`); each run then gets the radii of its rows.
    """

    def __init__(
        self,
        name: str,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        key: tuple[int, ...],
        settings: RunSettings,
        on_restart: Callable[[int], None] | None = None,
    ) -> None:
        self.name, self.model, self.x, self.y, self.threat = name, model, x, y, threat
        self.key, self.settings, self.on_restart = key, settings, on_restart
        self.gradients = 0

    def __call__(self, active: torch.Tensor, restart: int) -> AttackRun:
        if self.on_restart is not None:
            self.on_restart(restart)
        generator = seeded_generator(self.x.device, *self.key, restart)
        start = self.threat.sample(self.x, generator=generator)[active]
        xa, ya, threat = self.x[active], self.y[active], self.threat.rows(active)
        run = self.settings
        x_adv = ATTACKS[self.name](self.model, xa, ya, threat, start, run, generator)
        delta = threat.project(x_adv - xa, xa)  # a buggy attack cannot leave the ball
        self.gradients += gradients_per_sample(self.name, run) * active.numel()
        with attack_mode(self.model, self.settings.bn_mode), torch.no_grad():
            out = self.model(xa + delta)
        return AttackRun(delta, is_fooled(out, ya), cross_entropy_per_sample(out, ya))
