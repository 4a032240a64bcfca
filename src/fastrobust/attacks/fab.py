"""FAB: the fast adaptive boundary attack, targeted (FAB-T) or untargeted, L-inf and L2.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack"
(ICML 2020), Algorithm 1; FAB-T, its targeted version, is the third attack of AutoAttack
(Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"). FAB looks for the *smallest* adversarial perturbation, so one run
answers every eps at once: a sample is fooled at ``eps`` exactly when the norm FAB found is
``<= eps``. Each iteration, from the current point ``x_k`` and the original ``x_0``:

1. linearise the decision boundary at ``x_k``: ``f(x_k) + grad f(x_k).(z - x_k) = 0`` where
   ``f = z_t - z_y`` (targeted: ``t`` a fixed class; untargeted: the class whose linearised
   boundary is closest, ``|f_k| / ||grad f_k||_dual``);
2. project both ``x_k`` and ``x_0`` onto that hyperplane inside the ``[0,1]`` box, in the
   attack's norm (:meth:`ThreatModel.to_hyperplane`): ``d_k`` and ``d_0``;
3. step to the convex combination biased towards ``x_0``, with overshoot ``eta``:
   ``x_{k+1} = clip((1 - a)(x_k + eta d_k) + a (x_0 + eta d_0))``,
   ``a = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max)``;
4. when ``x_{k+1}`` is misclassified, keep it if it is the smallest so far, then move back
   towards ``x_0``: ``x_{k+1} = x_0 + beta (x_{k+1} - x_0)``.

Defaults are AutoAttack's (100 iterations, ``alpha_max = 0.1``, ``eta = 1.05``, ``beta = 0.9``,
one run per target from ``x_0`` itself, targets the 9 classes with the highest clean logits
after the true one). Each iteration checks its new point with one forward pass, moves a
misclassified one back towards ``x0``, then takes one input gradient there, as the reference
implementation does: on points still robust after APGD (FAB-T's place in AutoAttack) almost
every iterate is misclassified, so taking the gradient before the check would need a second
one at the moved point (about two gradients per iteration, measured on the AutoAttack
benchmark of BENCHMARKS.md, against one forward pass and one gradient now).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastrobust.attacks.contract import (
    BNMode,
    Model,
    attack_mode,
    clip_target_count,
    is_fooled,
    target_classes,
)
from fastrobust.attacks.restarts import AttackRun, check_start, worst_case_over_restarts
from fastrobust.attacks.threat import ThreatModel, per_sample
from fastrobust.errors import ConfigError


@dataclass(frozen=True)
class MinimalPerturbation:
    """The smallest adversarial perturbation found per sample, and its norm.

    ``norm`` is ``0`` for a sample misclassified without perturbation and ``inf`` where none
    was found (``delta`` is then zero). A sample is fooled at ``eps`` iff ``norm <= eps``.
    """

    delta: torch.Tensor
    norm: torch.Tensor

    def fooled_at(self, eps: float) -> torch.Tensor:
        """Per-sample booleans: is the perturbation found within ``eps``?"""
        return self.norm <= eps


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1)


def _boundary(
    model: Model, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, threat: ThreatModel
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(f, grad f, logits)`` of the boundary FAB steps towards, at ``x`` (input gradients only).

    Targeted: ``f = z_target - z_y``. Untargeted: of all ``f_k = z_k - z_y``, the one whose
    linearised boundary is closest in the threat model's norm (one gradient per class).
    """
    x = x.detach().requires_grad_(True)
    rows = torch.arange(len(y), device=y.device)
    with torch.enable_grad():
        logits = model(x)
        if target is not None:
            f = logits[rows, target] - logits[rows, y]
            (grad,) = torch.autograd.grad(f.sum(), x)
            return f.detach(), grad, logits.detach()
        classes = logits.shape[1]
        grads = torch.stack(
            [
                torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < classes - 1)[0]
                for k in range(classes)
            ],
            1,
        )  # B x K x ...
    logits = logits.detach()
    f_all = logits - logits[rows, y][:, None]
    g_all = grads - grads[rows, y][:, None]
    dist = f_all.abs() / (threat.dual_norm(g_all.flatten(0, 1)).view(len(y), -1) + 1e-12)
    dist[rows, y] = math.inf
    k = dist.argmin(1)
    return f_all[rows, k], g_all[rows, k], logits


def _fab_run(
    model: Model,
    x0: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor | None,
    threat: ThreatModel,
    start: torch.Tensor,
    enough: torch.Tensor,
    *,
    steps: int,
    alpha_max: float,
    overshoot: float,
    backtrack: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One FAB run from ``x0 + start``: ``(delta, norm)`` of the smallest adversarial point
    found (``inf`` where none). A sample stops as soon as its norm is ``<= enough``."""
    n = len(y)
    best = torch.zeros_like(x0)
    best_norm = torch.full((n,), math.inf, device=x0.device, dtype=x0.dtype)
    idx = torch.arange(n, device=x0.device)  # the samples still iterating
    xs, ys = x0, y
    ts = target
    xk = (x0 + start).clamp(0, 1)
    f, grad, _ = _boundary(model, xk, ys, ts, threat)
    for step in range(steps):
        w = _flat(grad)
        b = (w * _flat(xk)).sum(1) - f
        d_cur = threat.to_hyperplane(_flat(xk), w, b).view_as(xk)
        d_orig = threat.to_hyperplane(_flat(xs), w, b).view_as(xk)
        n_cur = threat.norm(d_cur).clamp_min(1e-8)
        n_orig = threat.norm(d_orig).clamp_min(1e-8)
        alpha = per_sample((n_cur / (n_cur + n_orig)).clamp(0.0, alpha_max), xk)
        xk = ((1 - alpha) * (xk + overshoot * d_cur) + alpha * (xs + overshoot * d_orig)).clamp(
            0, 1
        )
        # check the new point with a forward pass first: a misclassified one moves back
        # towards x0 before its gradient is taken, so every iteration takes one forward pass
        # and one input gradient (a gradient at the point before moving back would be wasted)
        with torch.no_grad():
            logits = model(xk)
        adv = is_fooled(logits, ys)
        size = threat.norm(xk - xs)
        kept_norm = best_norm[idx]
        better = adv & (size < kept_norm)
        # masked arithmetic over the iterating rows: no bool indexing, no host sync
        best[idx] = torch.where(per_sample(better, xk), xk - xs, best[idx])
        best_norm[idx] = torch.where(better, size, kept_norm)
        if step == steps - 1:
            break
        keep = best_norm[idx] > enough[idx]
        if not bool(keep.all()):  # settled samples leave the batch
            idx, xs, ys, xk, adv = (t[keep] for t in (idx, xs, ys, xk, adv))
            ts = None if ts is None else ts[keep]
            if idx.numel() == 0:
                break
        xk = torch.where(per_sample(adv, xk), xs + backtrack * (xk - xs), xk)  # back towards x0
        f, grad, _ = _boundary(model, xk, ys, ts, threat)
    return best, best_norm


def fab(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    targeted: bool = True,
    targets: int = 9,
    steps: int = 100,
    restarts: int = 1,
    start: torch.Tensor | None = None,
    enough: torch.Tensor | float = 0.0,
    alpha_max: float = 0.1,
    overshoot: float = 1.05,
    backtrack: float = 0.9,
    generator: torch.Generator | None = None,
    bn_mode: BNMode = "eval",
) -> MinimalPerturbation:
    """FAB-T (``targeted``, runs per target class) or untargeted FAB; minimal perturbations.

    Each target (or, untargeted, the single class-free attack) gets ``restarts`` runs: the
    first from ``x + start`` (``start`` None: from ``x`` itself, as AutoAttack's FAB-T), later
    ones from a random start of ``threat`` at half its eps (from ``generator``). A sample keeps
    the smallest adversarial perturbation over all runs and takes part in a run only while that
    is larger than ``enough`` (per sample, or one number), through
    :func:`fastrobust.attacks.restarts.worst_case_over_restarts`: ``enough = 0`` minimises over
    every target (one answer for every eps); ``enough = threat.eps`` is AutoAttack's FAB-T at
    that eps, which moves on from a sample at its first success within eps. ``threat.eps`` does
    not bound FAB otherwise. Misclassified samples get ``norm = 0``.
    """
    if steps < 1 or restarts < 1:
        raise ConfigError(f"FAB needs steps >= 1 and restarts >= 1, got {steps} and {restarts}")
    if not 0 < alpha_max <= 1 or overshoot < 1 or not 0 < backtrack < 1:
        raise ConfigError(
            "FAB needs 0 < alpha_max <= 1, overshoot >= 1 and 0 < backtrack < 1, got "
            f"{alpha_max}, {overshoot} and {backtrack}"
        )
    check_start(start, x, restarts)
    x, y = x.detach(), y.detach()
    n = len(y)
    enough_t = torch.as_tensor(enough, dtype=x.dtype, device=x.device).expand(n)
    half = threat.with_eps(threat.eps / 2)
    with attack_mode(model, bn_mode):
        with torch.no_grad():
            logits = model(x)
        if targeted:
            count = clip_target_count(targets, logits.shape[1])
            plan: list[torch.Tensor | None] = list(target_classes(logits, y, count).T)
        else:
            plan = [None]

        def run_once(active: torch.Tensor, run: int) -> AttackRun:
            target, restart = plan[run // restarts], run % restarts
            xa = x[active]
            if restart > 0:
                first = half.sample(xa, generator=generator)
            else:
                first = torch.zeros_like(xa) if start is None else start[active]
            delta, size = _fab_run(
                model, xa, y[active], None if target is None else target[active], threat,
                first, enough_t[active], steps=steps, alpha_max=alpha_max,
                overshoot=overshoot, backtrack=backtrack,
            )  # fmt: skip
            return AttackRun(delta, size <= enough_t[active], -size)

        misclassified = is_fooled(logits, y)
        best = worst_case_over_restarts(run_once, x, len(plan) * restarts, fooled=misclassified)
    norm = torch.where(misclassified, 0.0, -best.loss).to(x.dtype)
    return MinimalPerturbation(best.delta.detach(), norm)
