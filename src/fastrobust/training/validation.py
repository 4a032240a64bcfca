"""Accuracy checks run between epochs: clean + PGD validation accuracy (sharded over ranks)
and PGD accuracy on the fixed training batch the overfitting monitor watches.

Both attack with ``steps`` PGD steps of :func:`~fastrobust.attacks.contract.pgd_step_size`
(Madry et al. 2018) from a random start, in BatchNorm eval mode; the model's own mode is restored afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from fastrobust import distributed
from fastrobust.attacks.contract import pgd_step_size
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import ThreatModel
from fastrobust.data.base import to_float


def _correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and PGD-attacked correct counts of one batch (device tensors, no host sync)."""
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).sum()
    x_adv = pgd(model, x, y, threat, steps=steps, step_size=pgd_step_size(threat.eps, steps))
    with torch.no_grad():
        adv = (model(x_adv).argmax(1) == y).sum()
    return clean, adv


def evaluate_split(
    model: nn.Module,
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    batch_size: int,
    device: torch.device,
    world: distributed.WorldInfo,
    indices: torch.Tensor | None = None,
) -> tuple[float, float]:
    """Clean and PGD accuracy on a split (only its images ``indices``, e.g. a
    :func:`~fastrobust.data.subsets.stratified_subset`, when given), sharded across ranks
    with exact counts: rank r takes every world_size-th image from the r-th."""
    chosen = torch.arange(len(y)) if indices is None else indices.cpu()
    idx = chosen[world.rank :: world.world_size]
    counts = torch.zeros(3, device=device)
    was_training = model.training
    model.eval()
    for start in range(0, len(idx), batch_size):
        b = idx[start : start + batch_size]
        clean, adv = _correct(
            model, to_float(x_uint8[b].to(device)), y[b].to(device), threat, steps
        )
        counts += torch.stack([clean, adv, torch.tensor(len(b), device=device)])
    model.train(was_training)
    distributed.all_reduce_sum(counts)
    n = max(float(counts[2]), 1.0)
    return float(counts[0]) / n, float(counts[1]) / n


def fixed_batch_pgd_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    batch_size: int | None = None,
) -> float:
    """PGD accuracy on one batch of ``[0,1]`` images (the overfitting monitor's check),
    attacked in chunks of ``batch_size`` (default: all at once)."""
    was_training = model.training
    chunk = batch_size or len(y)
    correct = torch.zeros((), device=y.device)
    for start in range(0, len(y), chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        x_adv = pgd(model, xb, yb, threat, steps=steps, step_size=pgd_step_size(threat.eps, steps))
        with torch.no_grad():
            model.eval()
            correct += (model(x_adv).argmax(1) == yb).sum()
    model.train(was_training)
    return float(correct) / max(len(y), 1)
