"""The maths of the training methods that resist catastrophic overfitting, as small functions.

Each function takes a :class:`~fastrobust.attacks.threat.ThreatModel` and works for every norm
through its ``sample`` / ``step`` / ``project`` operations; none branches on the norm.

* **N-FGSM** (de Jorge et al. 2022, "Make Some Noise: Reliable and Efficient Single-Step
  Adversarial Training"): start from noise drawn uniformly in a ball ``k`` times larger than
  the threat model's (default ``k = 2`` for L-inf, the paper's; 1 for L2), take one steepest-ascent step of size ``eps`` and do
  *not* project back to the eps ball; only the ``[0,1]`` box is enforced. The perturbation's
  norm is therefore bounded by ``(k + 1) * eps`` (for a step of size eps), not by eps.
* **GradAlign** (Andriushchenko & Flammarion 2020, "Understanding and Improving Fast
  Adversarial Training"): the regulariser ``lambda * (1 - cos(grad_x L(x), grad_x L(x + eta)))``
  with ``eta`` uniform in the eps ball, averaged over the batch. The gradient at ``x + eta`` is
  taken with ``create_graph=True`` so the regulariser's own gradient reaches the weights
  (double backpropagation); the one at ``x`` is treated as a constant, as in the authors'
  reference implementation, which halves the second-order work.
* **Free adversarial training** (Shafahi et al. 2019, "Adversarial Training for Free!"): the
  one backward pass of a training step yields the input gradient too; the perturbation moves
  one step of size eps along it and is projected back into the threat model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F

from fastrobust.attacks.contract import (
    BNMode,
    LossFn,
    Model,
    attack_mode,
    cross_entropy_per_sample,
    gradient_scale,
    input_gradient,
)
from fastrobust.attacks.threat import ThreatModel, project_box
from fastrobust.errors import ConfigError
from fastrobust.training.double_backprop import cheap_conv_double_backward

#: N-FGSM's default noise radius as a multiple of eps, per norm. L-inf: 2 (de Jorge et al.
#: 2022). The paper has no L2 version; in L2 the noise and the step add up in norm, and on the
#: digits default (L2 eps 1.0, 30 epochs) factor 2 left the model at 21% clean accuracy while
#: 1 trained well (docs/catastrophic_overfitting.md), so L2 uses 1: noise as large as eps.
NFGSM_NOISE_FACTOR: dict[str, float] = {"linf": 2.0, "l2": 1.0}


def nfgsm_default_noise_factor(threat: ThreatModel) -> float:
    """N-FGSM's noise factor for ``threat`` when none is given (:data:`NFGSM_NOISE_FACTOR`)."""
    return NFGSM_NOISE_FACTOR[threat.name]


# -- N-FGSM -----------------------------------------------------------------------------------
def nfgsm_noise(
    threat: ThreatModel,
    x: torch.Tensor,
    *,
    noise_factor: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """N-FGSM's start: a sample of the threat model's random start in a ball of radius
    ``noise_factor * eps`` (uniform in that ball with the default ``ball`` start), kept in the
    ``[0,1]`` box. ``noise_factor`` None: the norm's default."""
    if noise_factor is None:
        noise_factor = nfgsm_default_noise_factor(threat)
    if noise_factor < 0 or not math.isfinite(noise_factor):
        raise ConfigError(f"N-FGSM noise factor must be a finite number >= 0, got {noise_factor}")
    return threat.with_eps(noise_factor * cast(float, threat.eps)).sample(x, generator=generator)


def nfgsm_step(
    threat: ThreatModel,
    x: torch.Tensor,
    noise: torch.Tensor,
    grad: torch.Tensor,
    step_size: float,
) -> torch.Tensor:
    """N-FGSM's perturbation: ``noise + step_size * direction(grad)``, clipped to the box only.

    Its norm is at most ``noise_factor * eps + step_size``: the box clip moves every coordinate
    towards zero, so it never increases the norm.
    """
    return project_box(threat.step(noise, grad, step_size), x)


def nfgsm_bound(threat: ThreatModel, noise_factor: float, step_size: float) -> float:
    """Largest norm an N-FGSM perturbation can have (triangle inequality)."""
    return noise_factor * cast(float, threat.eps) + step_size


def nfgsm_perturbation(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    noise_factor: float | None = None,
    step_size: float | None = None,
    bn_mode: BNMode = "eval",
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """N-FGSM's training input ``x + delta`` (one input gradient; ``step_size`` defaults to eps,
    ``noise_factor`` to the norm's default).

    The model runs in ``bn_mode`` and is returned in the mode it was in; only the input gets a
    gradient.
    """
    alpha = cast(float, threat.eps) if step_size is None else float(step_size)
    x = x.detach()
    noise = nfgsm_noise(threat, x, noise_factor=noise_factor)
    loss_fn = cross_entropy_per_sample if loss_fn is None else loss_fn
    with attack_mode(model, bn_mode):
        grad, _, _ = input_gradient(model, x + noise, y, loss_fn)
    return (x + nfgsm_step(threat, x, noise, grad, alpha)).detach()


# -- GradAlign --------------------------------------------------------------------------------
#: GradAlign's weight per norm as a function of eps (in ``[0,1]`` pixel units). L-inf: the
#: authors' log-linear rule for CIFAR-10, ``0.02 * 10 ** (255 * eps / 8)`` (0.2 at eps 8/255,
#: 2.0 at 16/255), held at 2.0 beyond 16/255, the largest eps they trained (the rule would
#: reach 4.7e4 at eps 0.2). The paper gives no L2 values; L2 uses its headline weight, 0.2.
GRADALIGN_DEFAULT_LAMBDA: dict[str, Callable[[float], float]] = {
    "linf": lambda eps: 0.02 * 10 ** (255.0 * min(eps, 16 / 255) / 8.0),
    "l2": lambda eps: 0.2,
}


def gradalign_default_lambda(threat: ThreatModel) -> float:
    """GradAlign's regularisation weight for ``threat`` (see :data:`GRADALIGN_DEFAULT_LAMBDA`)."""
    return GRADALIGN_DEFAULT_LAMBDA[threat.name](cast(float, threat.eps))


def cosine_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each sample's flattened ``a`` and ``b`` (shape B); zero vectors
    give 0."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12)


def gradalign_terms(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eta: torch.Tensor,
    *,
    bn_mode: BNMode = "eval",
    loss_fn: LossFn | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GradAlign's penalty at the noise ``eta``, and the input gradient at ``x + eta``.

    Returns ``mean_i (1 - cos(grad_x L(x_i), grad_x L(x_i + eta_i)))``, differentiable in the
    weights through the gradient at ``x + eta`` (double backpropagation), and that gradient
    detached: when ``eta`` is also the fast step's random start, it is the fast step's
    gradient too, so a GradAlign training step needs no separate attack gradient. The
    convolutions' second derivatives take ordinary kernels
    (:mod:`fastrobust.training.double_backprop`).
    """
    loss_fn = cross_entropy_per_sample if loss_fn is None else loss_fn
    x = x.detach()
    with attack_mode(model, bn_mode):
        grad_clean, _, _ = input_gradient(model, x, y, loss_fn)
        x_noisy = (x + eta.detach()).requires_grad_(True)
        scale = gradient_scale(x_noisy)  # fp16: keeps the gradient from underflowing to zero
        with torch.enable_grad(), cheap_conv_double_backward():
            loss = loss_fn(model(x_noisy), y).sum()
            (grad_noisy,) = torch.autograd.grad(loss * scale, x_noisy, create_graph=True)
    # the cosine does not see the constant scale
    penalty = (1.0 - cosine_per_sample(grad_clean, grad_noisy)).mean()
    return penalty, (grad_noisy / scale).detach()


def gradalign_penalty(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    bn_mode: BNMode = "eval",
    generator: torch.Generator | None = None,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """GradAlign's penalty (see :func:`gradalign_terms`) with ``eta`` the threat model's random
    start (uniform in the eps ball by default). Multiply by lambda and add to the loss."""
    eta = threat.sample(x.detach(), generator=generator)
    return gradalign_terms(model, x, y, eta, bn_mode=bn_mode, loss_fn=loss_fn)[0]


# -- free adversarial training ----------------------------------------------------------------
def free_update(
    threat: ThreatModel,
    delta: torch.Tensor,
    grad: torch.Tensor,
    x: torch.Tensor,
    step_size: float | None = None,
) -> torch.Tensor:
    """Free AT's perturbation update from the training step's input gradient: one step of size
    ``step_size`` (default eps, as Shafahi et al. 2019), projected into the ball and the box."""
    alpha = cast(float, threat.eps) if step_size is None else float(step_size)
    return threat.project(threat.step(delta, grad, alpha), x).detach()


def carry_perturbation(
    threat: ThreatModel, delta: torch.Tensor | None, x: torch.Tensor
) -> torch.Tensor:
    """The perturbation free AT starts a batch with: the previous batch's, projected for the new
    images (zeros for the first batch; cut or zero-padded when the batch size differs)."""
    if delta is None:
        return torch.zeros_like(x)
    delta = delta.to(device=x.device, dtype=x.dtype)
    if delta.shape != x.shape:
        carried = torch.zeros_like(x)
        n = min(len(delta), len(x))
        carried[:n] = delta[:n]
        delta = carried
    return threat.project(delta, x)
