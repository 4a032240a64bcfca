"""A model with masked gradients, for checking that the score-based attack sees through them."""

from __future__ import annotations

import torch
from torch import nn


class Quantised(nn.Module):
    """``model`` behind 8-bit input quantisation: ``torch.round`` has zero gradient, so the
    gradient attacks see none (masked gradients) while the decisions barely change."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 255) / 255)
