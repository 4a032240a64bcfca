"""The attack on a Gaussian-smoothed classifier (Salman et al., NeurIPS 2019, "SmoothAdv").

A smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` has no gradient; its
soft version ``G(x) = E[softmax(f(x + noise))]`` does. SmoothAdv attacks ``G`` estimated with
``m`` Monte-Carlo noise draws, the same draws at every step: the loss is
``-log((1/m) sum_j softmax(f(x' + noise_j))_y)``. :class:`MonteCarloSoftClassifier` is that
estimate as a model whose "logits" are the log of the averaged probabilities, so the ordinary
projected-gradient loop (:func:`~fastrobust.attacks.projected_gradient.pgd`, any threat model,
the attack contract) attacks it with cross-entropy as its loss unchanged. Training (the
``smoothadv`` method) and certification's upper-bound check both use it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fastrobust.attacks.contract import BNMode
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError


class MonteCarloSoftClassifier(nn.Module):
    """``log((1/m) sum_j softmax(f(x + noise_j)))`` for fixed noise draws ``noise`` (m x B x ...).

    The output is a log-probability per class; as logits it has the same softmax, so the
    cross-entropy of it is SmoothAdv's loss. Noise is not clamped to ``[0,1]`` (Cohen et al.
    2019 smooth over the whole space)."""

    def __init__(self, model: nn.Module, noise: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.noise.shape[0]
        noisy = (x.unsqueeze(0) + self.noise).flatten(0, 1)
        logp = torch.log_softmax(self.model(noisy).float(), dim=1)
        logp = logp.view(m, x.shape[0], -1)
        return torch.logsumexp(logp, dim=0) - math.log(m)


def gaussian_noise(
    x: torch.Tensor, sigma: float, samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``samples`` draws of ``N(0, sigma^2 I)`` shaped like ``x`` (samples x B x ...)."""
    if sigma <= 0 or samples < 1:
        raise ConfigError(f"need sigma > 0 and samples >= 1, got {sigma} and {samples}")
    shape = (samples, *x.shape)
    return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype) * sigma


def smoothed_pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    sigma: float,
    samples: int,
    steps: int,
    step_size: float | None = None,
    noise: torch.Tensor | None = None,
    bn_mode: BNMode = "eval",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SmoothAdv's attack: random-start PGD inside ``threat`` on the Monte-Carlo soft
    classifier of ``model`` smoothed with ``sigma`` (``samples`` draws, fixed over the steps;
    ``noise`` gives them). Returns ``x_adv`` (in the ball and in ``[0,1]``)."""
    if noise is None:
        noise = gaussian_noise(x, sigma, samples, generator)
    soft = MonteCarloSoftClassifier(model, noise)
    return pgd(
        soft,
        x,
        y,
        threat,
        steps=steps,
        step_size=step_size,
        bn_mode=bn_mode,
        generator=generator,
    )
