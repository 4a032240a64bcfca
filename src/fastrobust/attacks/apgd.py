"""Auto-PGD (APGD) with the cross-entropy or the DLR loss, over any threat model.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML 2020), Algorithm 1. Compared with plain PGD (Madry et al. 2018)
APGD

* starts with step size ``eta = 2 * eps`` and halves it, per sample, at checkpoints
  ``w_j = ceil(p_j * N)`` with ``p_0 = 0``, ``p_1 = 0.22`` and
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, when either (1) the loss increased in
  at most a fraction ``rho = 0.75`` of the steps since the last checkpoint, or (2) the step size
  was not reduced at the last checkpoint and the best loss has not improved since;
  after a reduction the iterate restarts from the best point found so far;
* uses momentum: ``z = P(x_k + eta * direction(grad))``,
  ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))`` with ``a = 0.75``
  (``a = 1`` for the first step);
* keeps, per sample, any iterate that is misclassified (else the highest-loss iterate).

APGD-T, the second attack of AutoAttack, runs APGD once per target class ``t`` (the classes
with the highest clean logits after the true one, 9 by default) on the targeted DLR loss
``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, each target only on the points no earlier
target fooled. For randomised models (AutoAttack's ``rand`` version) ``eot`` averages the
gradient over that many forward/backward passes (expectation over transformation, Athalye et
al. 2018).

The DLR loss, ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, is invariant to shifting and
rescaling the logits, so it keeps a useful gradient where a saturated softmax zeroes the
cross-entropy's (a gradient-masking symptom).

The schedule, both step-size conditions and the order of operations follow the authors'
reference implementation (``fra31/auto-attack``); the random start is the threat model's own
(``ThreatModel.sample``), so PGD and APGD draw starts from the same distribution. A run of
``steps`` iterations costs at most ``steps`` input gradients and one last forward pass, the
same budget as :func:`fastrobust.pgd` with the same ``steps``: a point once fooled is done, so
later iterations compute only the others (and a run whose points are all fooled stops).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, cast

import torch

from fastrobust.attacks.contract import (
    BNMode,
    LossFn,
    Model,
    attack_mode,
    clip_target_count,
    cross_entropy_per_sample,
    input_gradient,
    is_fooled,
    target_classes,
)
from fastrobust.attacks.restarts import AttackRun, check_start, worst_case_over_restarts
from fastrobust.attacks.threat import ThreatModel, per_sample
from fastrobust.errors import ConfigError

APGDLoss = Literal["ce", "dlr"]
#: a loss with a target class per sample, ``loss_fn(logits, y, target) -> (B,)``
TargetedLossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference-of-logits-ratio loss per sample (Croce & Hein 2020, eq. 5), untargeted.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` where ``z_pi1 >= z_pi2 >= ...`` are
    the sorted logits. Positive exactly when the sample is misclassified. Needs >= 3 classes.
    """
    if logits.shape[1] < 3:
        raise ConfigError(f"the DLR loss needs at least 3 classes, the model has {logits.shape[1]}")
    z_sorted, order = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = order[:, -1] == y
    z_other = torch.where(top_is_y, z_sorted[:, -2], z_sorted[:, -1])
    return -(z_y - z_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


APGD_LOSSES: dict[str, LossFn] = {"ce": cross_entropy_per_sample, "dlr": dlr_loss}


def targeted_dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR loss per sample (Croce & Hein 2020, eq. 6), ascended by APGD-T.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)``: positive once the target's logit
    passes the true one. Needs >= 4 classes.
    """
    if logits.shape[1] < 4:
        raise ConfigError(
            f"the targeted DLR loss needs at least 4 classes, the model has {logits.shape[1]}"
        )
    z_sorted = logits.sort(dim=1).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    scale = z_sorted[:, -1] - (z_sorted[:, -3] + z_sorted[:, -4]) / 2
    return -(z_y - z_t) / (scale + 1e-12)


def _averaged_gradient(
    model: Model, x_adv: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, eot: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`input_gradient` averaged over ``eot`` passes (one pass for a deterministic model)."""
    grad, logits, loss = input_gradient(model, x_adv, y, loss_fn)
    for _ in range(eot - 1):
        more = input_gradient(model, x_adv, y, loss_fn)
        grad, logits, loss = grad + more[0], logits + more[1], loss + more[2]
    return grad / eot, logits / eot, loss / eot


def apgd_checkpoints(steps: int) -> list[int]:
    """Iteration counts after which APGD checks (and maybe halves) the step size.

    The first check comes after ``max(int(0.22 N), 1)`` iterations; each later gap shrinks by
    ``max(int(0.03 N), 1)`` down to ``max(int(0.06 N), 1)``, as in the reference code. For
    ``N = 100``: 22, 41, 57, 70, 80, 87, 93, 99.
    """
    gap = max(int(0.22 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    smallest = max(int(0.06 * steps), 1)
    points, at = [], gap
    while at <= steps:
        points.append(at)
        gap = max(gap - shrink, smallest)
        at += gap
    return points


#: ``evaluate(points, idx, gradient) -> (grad, logits, loss)``: one APGD run's model evaluation
Evaluate = Callable[
    [torch.Tensor, torch.Tensor | None, bool],
    tuple[torch.Tensor | None, torch.Tensor, torch.Tensor],
]


def _evaluator(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn | TargetedLossFn,
    target: torch.Tensor | None,
    eot: int,
) -> Evaluate:
    """``evaluate(points, idx, gradient) -> (grad, logits, loss)`` at ``x + points`` for the
    samples ``idx`` (None: all); ``grad`` is None unless ``gradient``. With ``target`` the loss
    is ``loss_fn(logits, y, target)``."""

    def evaluate(
        points: torch.Tensor, idx: torch.Tensor | None, gradient: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        xs, ys = (x, y) if idx is None else (x[idx], y[idx])
        ds = points if idx is None else points[idx]
        fn: LossFn
        if target is None:
            fn = cast(LossFn, loss_fn)  # untargeted: loss_fn(logits, y)
        else:
            ts = target if idx is None else target[idx]

            def fn(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
                return cast(TargetedLossFn, loss_fn)(out, labels, ts)

        if gradient:
            return _averaged_gradient(model, xs + ds, ys, fn, eot)
        with torch.no_grad():
            out = model(xs + ds)
            return None, out, fn(out, ys)

    return evaluate


def _apgd_run(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    delta: torch.Tensor,
    *,
    steps: int,
    loss_fn: LossFn | TargetedLossFn,
    target: torch.Tensor | None = None,
    rho: float = 0.75,
    momentum: float = 0.75,
    eot: int = 1,
    trace: list[torch.Tensor] | None = None,
) -> AttackRun:
    """One APGD run from ``delta``; returns its delta, fooled and best loss per sample.

    ``delta`` is the first misclassifying iterate where there is one, else the highest-loss
    iterate. With ``target`` the loss is ``loss_fn(logits, y, target)``. A fooled sample is
    done: later iterations take forward and backward passes of the others only (with
    BatchNorm in train mode, the batch statistics are those of the samples still attacked),
    and the run ends once every sample is fooled. ``trace``, when given, receives the
    per-sample step size used at each iteration.
    """
    n = x.shape[0]
    evaluate = _evaluator(model, x, y, loss_fn, target, eot)
    checks = set(apgd_checkpoints(steps))
    eps = cast(float, threat.eps)  # one radius: no per-row eps for APGD (spec per_row_eps)
    eta = torch.full((n,), 2.0 * eps, device=x.device, dtype=x.dtype)
    first_grad, logits, loss = evaluate(delta, None, True)
    grad = torch.zeros_like(x) if first_grad is None else first_grad
    fooled = is_fooled(logits, y)
    adv = delta.clone()
    best, best_loss, best_grad = delta.clone(), loss.clone(), grad.clone()
    prev_loss = loss
    increases = torch.zeros_like(loss)
    best_at_last_check = best_loss.clone()
    reduced_at_last_check = torch.ones_like(fooled)
    last_check = 0
    prev = delta
    for k in range(steps):
        still = (~fooled).nonzero().squeeze(1)
        if still.numel() == 0:
            break  # nothing left that a later iterate could change
        idx = None if still.numel() == n else still
        if trace is not None:
            trace.append(eta.clone())
        a = 1.0 if k == 0 else momentum
        z = threat.project(delta + per_sample(eta, x) * threat.direction(grad), x)
        new = threat.project(delta + a * (z - delta) + (1 - a) * (delta - prev), x)
        prev, delta = delta, new
        # the last iterate only needs its loss and prediction
        sub_grad, sub_logits, sub_loss = evaluate(delta, idx, k < steps - 1 or eot > 1)
        if idx is None:
            logits, loss = sub_logits, sub_loss
            grad = grad if sub_grad is None else sub_grad
        else:  # fooled samples keep their last values: nothing reads them any more
            logits, loss = logits.clone(), loss.clone()
            logits[idx], loss[idx] = sub_logits, sub_loss
            if sub_grad is not None:
                grad = grad.clone()
                grad[idx] = sub_grad
        # masked arithmetic, not bool indexing: no host sync (the only one per iteration is
        # the still-attacked set above, which keeps fooled samples out of the passes)
        now_fooled = is_fooled(logits, y) & ~fooled
        adv = torch.where(per_sample(now_fooled, x), delta, adv)
        fooled |= now_fooled
        increases += (loss > prev_loss).to(increases.dtype)
        prev_loss = loss
        improved = loss > best_loss
        best = torch.where(per_sample(improved, x), delta, best)
        best_loss = torch.where(improved, loss, best_loss)
        best_grad = torch.where(per_sample(improved, x), grad, best_grad)
        if k + 1 in checks and k < steps - 1:
            oscillating = increases <= rho * (k + 1 - last_check)
            stalled = ~reduced_at_last_check & (best_at_last_check >= best_loss)
            reduce = oscillating | stalled
            eta = torch.where(reduce, eta / 2, eta)
            delta = torch.where(per_sample(reduce, x), best, delta)
            grad = torch.where(per_sample(reduce, x), best_grad, grad)
            reduced_at_last_check = reduce
            best_at_last_check = best_loss.clone()
            increases.zero_()
            last_check = k + 1
    return AttackRun(torch.where(per_sample(fooled, x), adv, best).detach(), fooled, best_loss)


def apgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 100,
    restarts: int = 1,
    loss: APGDLoss = "ce",
    start: torch.Tensor | None = None,
    rho: float = 0.75,
    bn_mode: BNMode = "eval",
    generator: torch.Generator | None = None,
    eot: int = 1,
) -> torch.Tensor:
    """Untargeted APGD-CE or APGD-DLR (Croce & Hein 2020) inside ``threat``; returns ``x_adv``.

    ``eot > 1`` averages each gradient over that many passes (randomised models).

    ``start`` is the first perturbation; None draws the threat model's random start (from
    ``generator`` when given). With ``restarts > 1`` (random starts only) each restart runs only
    on the samples no earlier restart has fooled, and an unfooled sample keeps its highest-loss
    point, as in :func:`fastrobust.pgd`. The result is always projected back into the threat
    model.
    """
    if steps < 1 or restarts < 1:
        raise ConfigError(f"APGD needs steps >= 1 and restarts >= 1, got {steps} and {restarts}")
    if loss not in APGD_LOSSES:
        raise ConfigError(f"unknown APGD loss {loss!r}; choose one of {', '.join(APGD_LOSSES)}")
    _check_budget(rho, eot)
    check_start(start, x, restarts)
    loss_fn = APGD_LOSSES[loss]
    x, y = x.detach(), y.detach()

    def run_once(active: torch.Tensor, _restart: int) -> AttackRun:
        xa, ya = x[active], y[active]
        delta = threat.sample(xa, generator=generator) if start is None else start[active]
        return _apgd_run(
            model, xa, ya, threat, delta, steps=steps, loss_fn=loss_fn, rho=rho, eot=eot
        )

    with attack_mode(model, bn_mode):
        best = worst_case_over_restarts(run_once, x, restarts)
    return (x + threat.project(best.delta, x)).detach()


def _check_budget(rho: float, eot: int) -> None:
    if not 0 < rho <= 1:
        raise ConfigError(f"rho must be in (0, 1], got {rho}")
    if eot < 1:
        raise ConfigError(f"eot must be >= 1, got {eot}")


def apgd_targeted(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    targets: int = 9,
    steps: int = 100,
    start: torch.Tensor | None = None,
    rho: float = 0.75,
    bn_mode: BNMode = "eval",
    generator: torch.Generator | None = None,
    eot: int = 1,
) -> torch.Tensor:
    """APGD-T (Croce & Hein 2020): one APGD run on the targeted DLR loss per target class.

    The targets are the ``targets`` classes with the highest clean logits after ``y``
    (clipped to classes - 1, with a logged warning); target ``k`` runs only on the samples
    no earlier target fooled, each from ``start`` (None: a random start of ``threat`` from
    ``generator``), and every sample keeps its worst case
    (:func:`fastrobust.attacks.restarts.worst_case_over_restarts`). Returns ``x_adv``.
    """
    if steps < 1:
        raise ConfigError(f"APGD-T needs steps >= 1, got {steps}")
    _check_budget(rho, eot)
    check_start(start, x, 1)
    x, y = x.detach(), y.detach()
    with attack_mode(model, bn_mode):
        with torch.no_grad():
            logits = model(x)
        plan = target_classes(logits, y, clip_target_count(targets, logits.shape[1])).T

        def run_once(active: torch.Tensor, k: int) -> AttackRun:
            xa, ya = x[active], y[active]
            delta = threat.sample(xa, generator=generator) if start is None else start[active]
            return _apgd_run(
                model, xa, ya, threat, delta, steps=steps, loss_fn=targeted_dlr_loss,
                target=plan[k][active], rho=rho, eot=eot,
            )  # fmt: skip

        best = worst_case_over_restarts(run_once, x, len(plan))
    return (x + threat.project(best.delta, x)).detach()
