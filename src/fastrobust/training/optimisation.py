"""SGD and the learning-rate schedules of the optimisation config section."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fastrobust.training.config import OptimisationConfig


def lr_lambda(cfg: OptimisationConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor per optimiser step: ``step`` (x lr_gamma every lr_step_epochs, the
    paper's recipe), ``onecycle`` (linear warm-up to the peak, then linear down to 0; Wong et
    al. 2020) or ``constant``."""
    total = cfg.epochs * steps_per_epoch

    def factor(it: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "step":
            return cfg.lr_gamma ** ((it // steps_per_epoch) // cfg.lr_step_epochs)
        peak = max(1, int(cfg.warmup_fraction * total))
        if it < peak:
            return (it + 1) / peak
        return max(0.0, (total - it) / max(1, total - peak))

    return factor


def build_optimiser(
    model: nn.Module, cfg: OptimisationConfig, steps_per_epoch: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """SGD over ``model``'s parameters and its per-step learning-rate schedule."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch))
    return optimizer, scheduler
