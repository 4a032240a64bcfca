"""Projected gradient descent over any threat model: one loop for every norm.

FGSM, fast (single random-start step, Goodwin et al. 2020 Algorithm 1) and K-step PGD
(Madry et al. 2018) are all this loop with a different number of steps. Feature
visualisation and large targeted perturbations reuse it with a custom loss and a large eps.

Invariants kept here (DESIGN.md section 3): gradients are taken with respect to the input
only (``torch.autograd.grad``), the model runs in a stated BatchNorm mode and is returned in
the mode it was found in, BatchNorm running statistics are never updated, restarts keep the
worst case per sample, and every result is projected back into the threat model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError

#: a loss returning one value per sample, ``loss_fn(model(x_adv), y) -> (B,)``; PGD ascends it
#: (descends it when ``targeted``).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``on_step(step, loss)``: called before each step with the per-sample loss (B,) at the current
#: iterate (of the samples being attacked: with restarts, those not yet fooled)
StepCallback = Callable[[int, torch.Tensor], None]
BNMode = Literal["eval", "train"]


def cross_entropy_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with one value per sample (the default attack loss)."""
    return F.cross_entropy(logits, y, reduction="none")


@contextlib.contextmanager
def attack_mode(model: nn.Module, bn_mode: BNMode = "eval") -> Iterator[None]:
    """Run ``model`` in the requested BatchNorm mode, restoring every module's state after.

    ``eval`` uses running statistics (the paper's code); ``train`` uses batch statistics but
    switches off ``track_running_stats`` so the running statistics are never touched.
    """
    if bn_mode not in ("eval", "train"):
        raise ConfigError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    modes = [(m, m.training) for m in model.modules()]
    tracked: list[tuple[nn.Module, bool]] = []
    try:
        model.train(bn_mode == "train")
        if bn_mode == "train":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    tracked.append((m, m.track_running_stats))
                    m.track_running_stats = False
        yield
    finally:
        for m, flag in tracked:
            m.track_running_stats = flag
        for m, was_training in modes:
            m.training = was_training


def _success(
    logits: torch.Tensor, y: torch.Tensor, targeted: bool
) -> torch.Tensor:  # per-sample bool
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


def input_gradient(
    model: Callable[[torch.Tensor], torch.Tensor],
    x_adv: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    targeted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of the (signed) attack loss w.r.t. the input only; also returns output and loss."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x_adv)
        loss = loss_fn(out, y)
        objective = -loss.sum() if targeted else loss.sum()
        (grad,) = torch.autograd.grad(objective, x_adv)
    return grad, out.detach(), loss.detach()


def _pgd_single(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    steps: int,
    step_size: float,
    random_start: bool,
    targeted: bool,
    loss_fn: LossFn,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """One PGD run from one start; returns the projected perturbation."""
    delta = threat.sample(x) if random_start else torch.zeros_like(x)
    for i in range(steps):
        grad, _, loss = input_gradient(model, x + delta, y, loss_fn, targeted=targeted)
        if on_step is not None:
            on_step(i, loss)
        delta = threat.project(threat.step(delta, grad, step_size), x)
    return delta


def pgd(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    restarts: int = 1,
    random_start: bool = True,
    targeted: bool = False,
    loss_fn: LossFn | None = None,
    bn_mode: BNMode = "eval",
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss_fn`` inside ``threat``; returns ``x_adv``.

    ``steps=1`` with a random start is FGSM-RS / fast adversarial training's attack. With
    ``restarts > 1`` each sample keeps its worst case: a restart only runs on the samples no
    earlier restart has fooled (misclassified, or for ``targeted`` classified as ``y``), and
    among unfooled samples the highest-loss start is kept. ``y`` is the true label, or the
    target label when ``targeted``. ``on_step(step, loss)``, if given, sees the per-sample
    loss before every step (to record the objective's trajectory).
    """
    if steps < 0 or restarts < 1:
        raise ConfigError(f"need steps >= 0 and restarts >= 1, got {steps} and {restarts}")
    if step_size < 0:
        raise ConfigError(f"step size must be >= 0, got {step_size}")
    loss_fn = cross_entropy_per_sample if loss_fn is None else loss_fn
    x = x.detach()
    y = y.detach()
    module = model if isinstance(model, nn.Module) else None
    ctx = attack_mode(module, bn_mode) if module is not None else contextlib.nullcontext()
    with ctx:
        if restarts == 1:
            delta = _pgd_single(
                model, x, y, threat, steps, step_size, random_start, targeted, loss_fn, on_step
            )
            return (x + threat.project(delta, x)).detach()
        best = torch.zeros_like(x)
        best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(restarts):
            active = (~fooled).nonzero().squeeze(1)
            if active.numel() == 0:
                break
            xa, ya = x[active], y[active]
            delta = _pgd_single(
                model, xa, ya, threat, steps, step_size, random_start, targeted, loss_fn, on_step
            )
            with torch.no_grad():
                out = model(xa + delta)
                loss = loss_fn(out, ya).float()
                if targeted:
                    loss = -loss
                success = _success(out, ya, targeted)
                better = success | (loss > best_loss[active])
            idx = active[better]
            best[idx] = delta[better]
            best_loss[idx] = loss[better]
            fooled[active] = success
        return (x + threat.project(best, x)).detach()


def fgsm(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    step_size: float | None = None,
    random_start: bool = True,
    **kwargs: object,
) -> torch.Tensor:
    """Single-step attack (FGSM with random start for L-inf, Algorithm 1's step for L2).

    ``step_size`` defaults to the norm's fast-training factor times eps (1.5 for L2, 1.25 for
    L-inf), as in Goodwin et al. 2020 and Wong et al. 2020.
    """
    alpha = threat.fast_alpha_factor * threat.eps if step_size is None else step_size
    return pgd(model, x, y, threat, steps=1, step_size=alpha, random_start=random_start, **kwargs)  # type: ignore[arg-type]


@torch.no_grad()
def accuracy(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> int:
    """Number of correctly classified samples (host sync: call outside hot loops)."""
    return int((model(x).argmax(1) == y).sum())
