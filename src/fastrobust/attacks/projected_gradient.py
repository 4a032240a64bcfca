"""Projected gradient descent over any threat model: one loop for every norm.

FGSM, fast (single random-start step, Goodwin et al. 2020 Algorithm 1) and K-step PGD
(Madry et al. 2018) are all this loop with a different number of steps. Feature
visualisation and large targeted perturbations reuse it with a custom loss and a large eps.

The attack contract (:mod:`fastrobust.attacks.contract`, docs/architecture.md): gradients
with respect to the input only, a stated BatchNorm mode restored after, BatchNorm running
statistics never updated, an explicit or random start, restarts keeping the worst case per
sample, and every result projected back into the threat model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

from fastrobust.attacks.contract import (
    BNMode,
    LossFn,
    Model,
    attack_mode,
    cross_entropy_per_sample,
    input_gradient,
    is_fooled,
    pgd_step_size,
)
from fastrobust.attacks.restarts import AttackRun, check_start, worst_case_over_restarts
from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError

#: ``on_step(step, loss)``: called before each step with the per-sample loss (B,) at the current
#: iterate (of the samples being attacked: with restarts, those not yet fooled)
StepCallback = Callable[[int, torch.Tensor], None]


def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float | None = None,
    restarts: int = 1,
    start: torch.Tensor | None = None,
    targeted: bool = False,
    loss_fn: LossFn | None = None,
    bn_mode: BNMode = "eval",
    on_step: StepCallback | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss_fn`` inside ``threat``; returns ``x_adv``.

    ``start`` is the first perturbation (e.g. ``torch.zeros_like(x)``); None draws the threat
    model's random start (``threat.sample``, from ``generator`` when given). ``steps=1`` with a
    random start is FGSM-RS / fast adversarial training's attack. With ``restarts > 1`` (random
    starts only) each sample keeps its worst case: a restart only runs on the samples no earlier
    restart has fooled (misclassified, or for ``targeted`` classified as ``y``), and among
    unfooled samples the highest-loss run is kept. ``y`` is the true label, or the target label
    when ``targeted``. ``on_step(step, loss)``, if given, sees the per-sample loss before every
    step (to record the objective's trajectory). ``step_size`` defaults to the PGD rule,
    ``2.5 * eps / steps`` (:func:`~fastrobust.attacks.contract.pgd_step_size`).
    """
    if step_size is None:
        step_size = pgd_step_size(cast(float, threat.eps), steps)  # one radius per run
    if steps < 0 or restarts < 1:
        raise ConfigError(f"need steps >= 0 and restarts >= 1, got {steps} and {restarts}")
    if step_size < 0:
        raise ConfigError(f"step size must be >= 0, got {step_size}")
    check_start(start, x, restarts)
    loss_fn = cross_entropy_per_sample if loss_fn is None else loss_fn
    x, y = x.detach(), y.detach()

    def descend(xa: torch.Tensor, ya: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """One PGD run from the perturbation ``delta``: the whole loop, for every norm."""
        for i in range(steps):
            grad, _, loss = input_gradient(model, xa + delta, ya, loss_fn, targeted=targeted)
            if on_step is not None:
                on_step(i, loss)
            delta = threat.project(threat.step(delta, grad, step_size), xa)
        return delta

    with attack_mode(model, bn_mode):
        if restarts == 1:  # no restart to compare with: skip the scoring forward pass
            delta = threat.sample(x, generator=generator) if start is None else start
            return (x + threat.project(descend(x, y, delta), x)).detach()

        def run_once(active: torch.Tensor, _restart: int) -> AttackRun:
            xa, ya = x[active], y[active]
            delta = descend(xa, ya, threat.sample(xa, generator=generator))
            with torch.no_grad():
                out = model(xa + delta)
                loss = loss_fn(out, ya).float()
            return AttackRun(
                delta, is_fooled(out, ya, targeted=targeted), -loss if targeted else loss
            )

        best = worst_case_over_restarts(run_once, x, restarts)
        return (x + threat.project(best.delta, x)).detach()


def fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    step_size: float | None = None,
    start: torch.Tensor | None = None,
    targeted: bool = False,
    loss_fn: LossFn | None = None,
    bn_mode: BNMode = "eval",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Single-step attack (FGSM with random start for L-inf, Algorithm 1's step for L2).

    ``step_size`` defaults to the norm's fast-training factor times eps (1.5 for L2, 1.25 for
    L-inf), as in Goodwin et al. 2020 and Wong et al. 2020. Classic FGSM (no random start) is
    ``start=torch.zeros_like(x)`` or a threat model with ``random_start="none"``.
    """
    eps = cast(float, threat.eps)  # one radius: pgd takes one step size
    alpha = threat.fast_alpha_factor * eps if step_size is None else step_size
    return pgd(
        model,
        x,
        y,
        threat,
        steps=1,
        step_size=alpha,
        start=start,
        targeted=targeted,
        loss_fn=loss_fn,
        bn_mode=bn_mode,
        generator=generator,
    )
