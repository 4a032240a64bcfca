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

from fastrobust.attacks.apgd import apgd
from fastrobust.attacks.contract import (
    PGD_STEP_FACTOR,
    BNMode,
    Model,
    attack_mode,
    cross_entropy_per_sample,
    is_fooled,
    pgd_step_size,
)
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.restarts import AttackRun, seeded_generator
from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError


@dataclass(frozen=True)
class RunSettings:
    """What one run of a named attack may spend, and how it runs the model."""

    steps: int
    """input gradients"""
    step_size_factor: float = PGD_STEP_FACTOR
    """PGD's step size as a multiple of ``eps / steps`` (attacks with their own schedule ignore it)"""
    bn_mode: BNMode = "eval"

    def pgd_step_size(self, eps: float) -> float:
        """PGD's step size at radius ``eps`` (:func:`fastrobust.attacks.contract.pgd_step_size`)."""
        return pgd_step_size(eps, self.steps, self.step_size_factor)


#: ``attack(model, x, y, threat, start, settings) -> x_adv``: one run from the perturbation ``start``
NamedAttack = Callable[
    [Model, torch.Tensor, torch.Tensor, ThreatModel, torch.Tensor, RunSettings], torch.Tensor
]


#: attacks a curve can run, alone or as a cascade in the given order
ATTACKS: dict[str, NamedAttack] = {
    "pgd": lambda model, x, y, threat, start, run: pgd(
        model, x, y, threat, steps=run.steps, step_size=run.pgd_step_size(threat.eps),
        start=start, bn_mode=run.bn_mode,
    ),
    "apgd-ce": lambda model, x, y, threat, start, run: apgd(
        model, x, y, threat, steps=run.steps, loss="ce", start=start, bn_mode=run.bn_mode
    ),
    "apgd-dlr": lambda model, x, y, threat, start, run: apgd(
        model, x, y, threat, steps=run.steps, loss="dlr", start=start, bn_mode=run.bn_mode
    ),
}  # fmt: skip


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
    x_adv = ATTACKS[name](model, x, y, threat, start, settings)
    return threat.project(x_adv - x, x)  # a buggy attack still cannot leave the threat model


class SeededRuns:
    """``run_once(active, restart)``: attack ``name`` on the samples ``active`` from seeded starts.

    Counts the input gradients it spends in ``gradients``; ``on_restart(restart)``, when given,
    is told before each run (a progress bar). The loss it reports is the cross-entropy at the
    result, whatever the attack's own loss.
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
        xa, ya = self.x[active], self.y[active]
        run = self.settings
        delta = run_attack(
            self.name, self.model, xa, ya, self.threat, start=start, steps=run.steps,
            step_size_factor=run.step_size_factor, bn_mode=run.bn_mode,
        )  # fmt: skip
        self.gradients += self.settings.steps * active.numel()
        with attack_mode(self.model, self.settings.bn_mode), torch.no_grad():
            out = self.model(xa + delta)
        return AttackRun(delta, is_fooled(out, ya), cross_entropy_per_sample(out, ya))
