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
from typing import Protocol

import torch

from fastrobust.attacks.apgd import APGDLoss, apgd
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


class NamedAttack(Protocol):
    """One run from ``start`` with ``steps`` input gradients; returns ``x_adv``."""

    def __call__(
        self,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        start: torch.Tensor,
        steps: int,
        step_size_factor: float,
        bn_mode: BNMode,
    ) -> torch.Tensor: ...


def _pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    start: torch.Tensor,
    steps: int,
    step_size_factor: float,
    bn_mode: BNMode,
) -> torch.Tensor:
    step_size = pgd_step_size(threat.eps, steps, step_size_factor)
    return pgd(model, x, y, threat, steps=steps, step_size=step_size, start=start, bn_mode=bn_mode)


def _apgd_with(loss: APGDLoss) -> NamedAttack:
    def attack(
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: ThreatModel,
        *,
        start: torch.Tensor,
        steps: int,
        step_size_factor: float,  # APGD sets its own step sizes
        bn_mode: BNMode,
    ) -> torch.Tensor:
        return apgd(model, x, y, threat, steps=steps, loss=loss, start=start, bn_mode=bn_mode)

    return attack


#: attacks a curve can run, alone or as a cascade in the given order
ATTACKS: dict[str, NamedAttack] = {
    "pgd": _pgd,
    "apgd-ce": _apgd_with("ce"),
    "apgd-dlr": _apgd_with("dlr"),
}


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
    x_adv = ATTACKS[name](
        model,
        x,
        y,
        threat,
        start=start,
        steps=steps,
        step_size_factor=step_size_factor,
        bn_mode=bn_mode,
    )
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
        steps: int,
        step_size_factor: float = PGD_STEP_FACTOR,
        bn_mode: BNMode = "eval",
        on_restart: Callable[[int], None] | None = None,
    ) -> None:
        self.name, self.model, self.x, self.y, self.threat = name, model, x, y, threat
        self.key, self.steps, self.step_size_factor = key, steps, step_size_factor
        self.bn_mode, self.on_restart = bn_mode, on_restart
        self.gradients = 0

    def __call__(self, active: torch.Tensor, restart: int) -> AttackRun:
        if self.on_restart is not None:
            self.on_restart(restart)
        generator = seeded_generator(self.x.device, *self.key, restart)
        start = self.threat.sample(self.x, generator=generator)[active]
        xa, ya = self.x[active], self.y[active]
        delta = run_attack(
            self.name, self.model, xa, ya, self.threat, start=start, steps=self.steps,
            step_size_factor=self.step_size_factor, bn_mode=self.bn_mode,
        )  # fmt: skip
        self.gradients += self.steps * active.numel()
        with attack_mode(self.model, self.bn_mode), torch.no_grad():
            out = self.model(xa + delta)
        return AttackRun(delta, is_fooled(out, ya), cross_entropy_per_sample(out, ya))
