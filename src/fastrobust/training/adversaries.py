"""The training-time perturbation: ``steps`` random-start PGD steps on the unwrapped model.

Training methods (:mod:`fastrobust.training.methods`) and the timing measurements use it;
0 steps is the clean batch. Under DDP it must be given the unwrapped module (no gradient
all-reduce for the attack).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastrobust.attacks.contract import BNMode
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import ThreatModel


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
            bn_mode=self.bn_mode,
        )

    def describe(self) -> str:
        if self.steps == 0:
            return "standard (no attack)"
        return f"{self.steps}-step {self.threat} alpha={self.step_size:g} bn={self.bn_mode}"
