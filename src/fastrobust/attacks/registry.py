"""The built-in attacks as registered specs, and how evaluation runs an attack by name.

Each built-in attack is one :func:`~fastrobust.attacks.spec.register_attack` call below (the
spec and how to add an attack: :mod:`fastrobust.attacks.spec`, docs/architecture.md), in the
order ``eval --attack`` lists them. Code outside ``attacks/`` looks attacks up through this
module (it re-exports :func:`attack_spec`, :func:`attack_names`, ...), so the built-ins are
registered whenever a lookup can happen. :func:`run_attack` projects whatever an attack returns back
into the threat model, so a buggy attack still cannot report a perturbation outside it.
:class:`SeededRuns` feeds :func:`fastrobust.attacks.restarts.worst_case_over_restarts` with runs
from seeded random starts: restart ``r`` draws the starts of the whole batch from the stream
``key + (r,)`` and a sample takes its own row, so its start does not depend on which of its
neighbours are still attacked (the robustness curve of Goodwin et al. 2020, Figure 2, and its
gradient-masking checks rely on this).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

from fastrobust.attacks.apgd import APGDLoss, apgd, apgd_targeted
from fastrobust.attacks.contract import (
    PGD_STEP_FACTOR,
    BNMode,
    Model,
    attack_mode,
    cross_entropy_per_sample,
    is_fooled,
)
from fastrobust.attacks.fab import fab
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.restarts import AttackRun, seeded_generator
from fastrobust.attacks.spec import (
    AttackSpec,
    Budget,
    MinimalAttack,
    NamedAttack,
    RunSettings,
    attack_names,
    attack_spec,
    is_attack,
    register_attack,
    unregister_attack,
)
from fastrobust.attacks.square import square
from fastrobust.attacks.threat import ThreatModel

__all__ = [
    "VERSIONS",
    "AttackSpec",
    "MinimalAttack",
    "NamedAttack",
    "RunSettings",
    "SeededRuns",
    "attack_names",
    "attack_spec",
    "is_attack",
    "register_attack",
    "run_attack",
    "unregister_attack",
]

register_attack(AttackSpec(
    "pgd",
    run=lambda model, x, y, threat, start, run, _g: pgd(
        model, x, y, threat, steps=run.steps,
        step_size=run.pgd_step_size(cast(float, threat.eps)),  # one radius: not per_row_eps
        start=start, bn_mode=run.bn_mode,
    ),
    budget=lambda s, restarts: {
        "steps": s.steps, "restarts": restarts, "step_size": f"{s.step_size_factor:g}*eps/steps"
    },
    gradients=lambda s: s.steps * s.eot,
    restartable=True,
))  # fmt: skip


def _apgd(loss: APGDLoss) -> NamedAttack:
    """APGD with ``loss`` (``"ce"`` or ``"dlr"``) as a named attack."""
    return lambda model, x, y, threat, start, run, _g: apgd(
        model, x, y, threat, steps=run.steps, loss=loss, start=start, bn_mode=run.bn_mode,
        eot=run.eot,
    )  # fmt: skip


def _apgd_budget(s: RunSettings, restarts: int) -> Budget:
    return {"steps": s.steps, "restarts": restarts, "eot": s.eot}


register_attack(AttackSpec(
    "apgd-ce", run=_apgd("ce"), budget=_apgd_budget, gradients=lambda s: s.steps * s.eot,
    restartable=True,
))  # fmt: skip
register_attack(AttackSpec(
    "apgd-dlr", run=_apgd("dlr"), budget=_apgd_budget, gradients=lambda s: s.steps * s.eot,
    restartable=True,
    min_classes=3,  # the DLR loss compares the largest and third-largest logits
))  # fmt: skip
register_attack(AttackSpec(
    "apgd-t",
    run=lambda model, x, y, threat, start, run, _g: apgd_targeted(
        model, x, y, threat, targets=run.targets, steps=run.steps, start=start,
        bn_mode=run.bn_mode, eot=run.eot,
    ),
    budget=lambda s, _restarts: {"steps": s.steps, "targets": s.targets, "eot": s.eot},
    gradients=lambda s: s.steps * s.eot * s.targets,
    targeted=True,
    min_classes=4,
    min_classes_reason="targeted DLR loss",
    needs_logits=True,
))  # fmt: skip
# Square draws its own start (stripes / tiles) and windows from the seeded generator
register_attack(AttackSpec(
    "square",
    run=lambda model, x, y, threat, _start, run, generator: square(
        model, x, y, threat, queries=run.queries, generator=generator, bn_mode=run.bn_mode
    ),
    budget=lambda s, _restarts: {"queries": s.queries, "p_init": 0.8},
    gradients=lambda s: 0,
    per_row_eps=True,  # Square's cost is its per-query forwards (Andriushchenko et al. 2020)
    needs_logits=True,
))  # fmt: skip
# minimum-norm attacks (Croce & Hein 2020, FAB; ``fab-t`` is AutoAttack's FAB-T)
register_attack(AttackSpec(
    "fab-t",
    minimal=lambda model, x, y, threat, run, enough: fab(
        model, x, y, threat, targets=run.targets, steps=run.steps, enough=enough,
        bn_mode=run.bn_mode,
    ),
    budget=lambda s, _restarts: {"steps": s.steps, "targets": s.targets},
    gradients=lambda s: s.steps * s.eot * s.targets,
    targeted=True,
    needs_logits=True,
))  # fmt: skip
register_attack(AttackSpec(
    "fab",
    minimal=lambda model, x, y, threat, run, enough: fab(
        model, x, y, threat, targeted=False, steps=run.steps, enough=enough, bn_mode=run.bn_mode
    ),
    budget=lambda s, _restarts: {"steps": s.steps},
    gradients=lambda s: s.steps * s.eot,
    needs_logits=True,
))  # fmt: skip

#: AutoAttack's versions (Croce & Hein 2020) as cascades with their budgets: ``standard`` for
#: deterministic models, ``rand`` (with EOT) for randomised ones
VERSIONS: dict[str, tuple[tuple[str, ...], RunSettings, int]] = {
    "autoattack": (("apgd-ce", "apgd-t", "fab-t", "square"), RunSettings(100), 1),
    "autoattack-rand": (("apgd-ce", "apgd-dlr"), RunSettings(100, eot=20), 1),
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
    spec = attack_spec(name)
    settings = RunSettings(steps, step_size_factor, bn_mode)
    x_adv = spec.run_once(model, x, y, threat, start, settings, None)
    return threat.project(x_adv - x, x)  # a buggy attack still cannot leave the threat model


class SeededRuns:
    """``run_once(active, restart)``: attack ``name`` on the samples ``active`` from seeded starts.

    Counts the input gradients it spends in ``gradients``; ``on_restart(restart)``, when given,
    is told before each run (a progress bar). The loss it reports is the cross-entropy at the
    result, whatever the attack's own loss. ``threat`` may have one radius per row of ``x``
    (for an attack whose spec has ``per_row_eps``); each run then gets the radii of its rows.
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
        self.spec = attack_spec(name)
        self.gradients = 0

    def __call__(self, active: torch.Tensor, restart: int) -> AttackRun:
        if self.on_restart is not None:
            self.on_restart(restart)
        generator = seeded_generator(self.x.device, *self.key, restart)
        start = self.threat.sample(self.x, generator=generator)[active]
        xa, ya, threat = self.x[active], self.y[active], self.threat.rows(active)
        run = self.settings
        x_adv = self.spec.run_once(self.model, xa, ya, threat, start, run, generator)
        delta = threat.project(x_adv - xa, xa)  # a buggy attack cannot leave the ball
        self.gradients += self.spec.gradients(run) * active.numel()
        with attack_mode(self.model, self.settings.bn_mode), torch.no_grad():
            out = self.model(xa + delta)
        return AttackRun(delta, is_fooled(out, ya), cross_entropy_per_sample(out, ya))
