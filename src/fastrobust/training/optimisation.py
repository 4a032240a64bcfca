"""SGD and the learning-rate schedules of the optimisation config section."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fastrobust.errors import ConfigError
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


def check_epochs_change(
    cfg: OptimisationConfig,
    *,
    done: int,
    epochs: int,
    epochs_to_run: Callable[[int], int] | None = None,
) -> None:
    """Raise ConfigError unless a run planned for ``cfg.epochs`` epochs, ``done`` of them
    trained, can continue to ``epochs`` as if it had been planned that way.

    ``epochs`` is the epoch budget, as the config's ``epochs``; ``epochs_to_run`` maps it to
    the epochs the run lasts (the training method's, e.g. ``ceil(epochs / replays)`` for free
    adversarial training, whose ``done`` counts epochs of replayed batches).

    ``step`` and ``constant`` learning rates depend only on the epoch reached, so the longer
    (or shorter) run is exactly a continuation. ``onecycle`` lays its warm-up and decay out
    over the planned total: a new total would change the learning rate of epochs already
    trained, so it is refused. Fewer epochs than ``done`` are always refused.
    """
    runs = epochs if epochs_to_run is None else epochs_to_run(epochs)
    if runs < done:
        means = "" if runs == epochs else f" ({runs} epochs of replayed batches)"
        raise ConfigError(
            f"optimisation.epochs {epochs}{means} is below the {done} epochs this run has "
            "already trained (a trained epoch cannot be undone; its best.pt and metrics stay "
            "as they are)",
            field="optimisation.epochs",
        )
    if epochs != cfg.epochs and cfg.schedule == "onecycle":
        raise ConfigError(
            f"optimisation.epochs {epochs}: this run's onecycle schedule is laid out over "
            f"{cfg.epochs} epochs (learning rate down to 0 at the end), so another total "
            f"would not continue it; start a new run with optimisation.epochs {epochs}, or "
            "train with optimisation.schedule step or constant to extend runs later",
            field="optimisation.epochs",
        )
