"""Training-time perturbation strategies: what the engine feeds the model each batch.

* ``standard``: no perturbation;
* ``fast``: one random-start step (Goodwin et al. 2020, Algorithm 1 for L2; FGSM with random
  start, Wong et al. 2020, for L-inf);
* ``pgd``: K random-start steps with ``alpha = 2.5 * eps / K`` (Madry et al. 2018).

All are :func:`fastrobust.attacks.pgd` with different step counts; under DDP they must be
given the unwrapped module (no gradient all-reduce for the attack).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastrobust.attacks.projected_gradient import BNMode, pgd
from fastrobust.attacks.threat import ThreatModel
from fastrobust.training.config import TrainConfig


@dataclass
class Adversary:
    """Perturb a training batch with ``steps`` PGD steps (0 steps: the clean batch)."""

    threat: ThreatModel
    steps: int
    step_size: float
    bn_mode: BNMode = "eval"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.steps == 0:
            return x
        return pgd(
            model,
            x,
            y,
            self.threat,
            steps=self.steps,
            step_size=self.step_size,
            random_start=self.threat.random_start != "none",
            bn_mode=self.bn_mode,
        )

    def describe(self) -> str:
        if self.steps == 0:
            return "standard (no attack)"
        return f"{self.steps}-step {self.threat} alpha={self.step_size:g} bn={self.bn_mode}"


def build_adversary(cfg: TrainConfig) -> Adversary:
    """The training adversary a config asks for."""
    return Adversary(
        threat=cfg.threat(),
        steps=cfg.attack_steps,
        step_size=cfg.attack_alpha,
        bn_mode=cfg.bn_mode,  # type: ignore[arg-type]
    )
