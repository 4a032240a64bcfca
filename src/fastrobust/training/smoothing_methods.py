"""Training for randomized smoothing: ``gaussian`` and ``smoothadv``, registered next to the
other methods (so DDP, AMP, resume, the Lightning module and timing need no change).

* ``gaussian`` (Cohen, Rosenfeld & Kolter, ICML 2019): train on ``x + N(0, sigma^2 I)``, a fresh
  draw every batch (from the run's device RNG stream, so a resumed run draws the same noise).
* ``smoothadv`` (Salman et al., NeurIPS 2019): draw ``noise_samples`` (m) noise vectors per
  image, attack the Monte-Carlo soft smoothed classifier with those draws inside the attack's
  L2 ball (eps, ``steps`` random-start steps; :func:`~fastrobust.attacks.smoothed.smoothed_pgd`),
  then train on the m noisy copies of the adversarial image, the loss averaged over them. With
  ``steps 1`` it is the fast idea applied to smoothing: one random-start step of size
  ``fast_alpha_factor * eps`` (1.5 eps for L2, Goodwin et al. 2020); K steps use PGD's
  ``2.5 * eps / K``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from fastrobust.attacks.contract import pgd_step_size
from fastrobust.attacks.smoothed import gaussian_noise, smoothed_pgd
from fastrobust.attacks.threat import ThreatModel
from fastrobust.settings import at_least, check_settings, positive, setting
from fastrobust.training.methods import AttackSettings, TrainingMethod, register_method


@dataclass
class GaussianOptions:
    """gaussian's options."""

    sigma: float = setting(0.25, rule=positive())
    """gaussian, smoothadv: standard deviation of the Gaussian noise (pixel units)"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


@dataclass
class SmoothAdvOptions:
    """smoothadv's options."""

    sigma: float = setting(0.25, rule=positive())
    """gaussian, smoothadv: standard deviation of the Gaussian noise (pixel units)"""
    noise_samples: int = setting(1, rule=at_least(1))
    """smoothadv: noise draws per image (m) the attack averages and the loss trains on"""

    def __post_init__(self) -> None:
        check_settings(self, "attack")


def _mean_logits(logits: torch.Tensor, samples: int, batch: int) -> torch.Tensor:
    """Per-image logits averaged over the noisy copies (what training accuracy reads)."""
    return logits.view(samples, batch, -1).mean(0)


@register_method("gaussian")
class Gaussian(TrainingMethod):
    """Gaussian noise augmentation, Cohen et al. 2019: the base classifier of a smoothed one.
    No attack, so no steps; the best epoch is picked by clean accuracy."""

    perturbs = False
    default_steps = 0
    best_metric = "val_clean_acc"
    Options = GaussianOptions

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + gaussian_noise(x, self.options.sigma, 1)[0]

    def describe(self) -> str:
        return f"gaussian noise sigma={self.options.sigma:g}"


@register_method("smoothadv")
class SmoothAdv(TrainingMethod):
    """SmoothAdv (Salman et al. 2019) with K steps (default 1: the fast, 1-step form)."""

    default_steps = 1
    Options = SmoothAdvOptions

    @classmethod
    def default_step_size(cls, threat: ThreatModel, steps: int) -> float:
        eps = cast(float, threat.eps)
        return threat.fast_alpha_factor * eps if steps == 1 else pgd_step_size(eps, steps)

    def __init__(self, attack: AttackSettings) -> None:
        super().__init__(attack)
        self.threat = attack.threat()
        self.steps = attack.attack_steps
        self.step_size = attack.attack_alpha
        self.bn_mode = attack.bn_mode

    def loss(
        self, train_model: nn.Module, attack_model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.options.noise_samples
        noise = gaussian_noise(x, self.options.sigma, m)
        x_adv = smoothed_pgd(
            attack_model,
            x,
            y,
            self.threat,
            sigma=self.options.sigma,
            samples=m,
            steps=self.steps,
            step_size=self.step_size,
            noise=noise,
            bn_mode=self.bn_mode,
        )
        noisy = (x_adv.unsqueeze(0) + noise).flatten(0, 1)
        logits = train_model(noisy)
        loss = self.criterion(logits, y.repeat(m))
        return loss, _mean_logits(logits.detach(), m, len(y))

    def describe(self) -> str:
        return (
            f"smoothadv {self.steps}-step {self.threat} alpha={self.step_size:g} "
            f"sigma={self.options.sigma:g} m={self.options.noise_samples}"
        )
