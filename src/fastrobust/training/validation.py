"""Accuracy checks run between epochs: clean + PGD validation accuracy (sharded over ranks)
and PGD accuracy on the fixed training batch the overfitting monitor watches.

Both attack with ``steps`` PGD steps of :func:`~fastrobust.attacks.contract.pgd_step_size`
(Madry et al. 2018) from a random start, in BatchNorm eval mode; the model's own mode is restored afterwards.
How often they run: :func:`between_epoch_intervals` (the ``auto`` rule of ``eval_every`` and
``overfit_check_every``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import nn

from fastrobust import distributed
from fastrobust.attacks.contract import pgd_step_size
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import ThreatModel
from fastrobust.data.base import to_float
from fastrobust.data.disk_loader import WORKERS, decoded_batches
from fastrobust.training.config import AUTO, CHECK_SHARE, VALIDATION_SHARE, TrainConfig
from fastrobust.training.methods import method_class


@dataclass(frozen=True)
class Intervals:
    """Epochs between validations and between overfitting checks, resolved (config.yaml's
    ``resolved``), with the attack work (forward-backward passes) the ``auto`` rule compared."""

    eval_every: int
    overfit_check_every: int
    epoch_work: int
    """training images x (attack steps + 1) x replays: one epoch's passes"""
    validation_work: int
    """validation images x (eval_steps + 1): one validation's passes"""
    check_work: int
    """overfitting-check images x (eval_steps + 1): one check's passes"""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _auto_interval(work: int, epoch_work: int, share: float) -> int:
    """The smallest interval k with ``work / k <= share * epoch_work`` (at least 1)."""
    if work <= 0:
        return 1
    return max(1, math.ceil(work / (share * max(epoch_work, 1)) - 1e-9))


def between_epoch_intervals(cfg: TrainConfig, *, n_train: int, n_test: int) -> Intervals:
    """Resolve ``eval_every`` and ``overfit_check_every`` for a run on ``n_train`` training and
    ``n_test`` test images (an integer stays as given).

    ``auto``: the smallest interval at which validation costs at most
    :data:`~fastrobust.training.config.VALIDATION_SHARE` (the check:
    :data:`~fastrobust.training.config.CHECK_SHARE`) of an epoch's training, counted in
    forward-backward passes per image, the same rule on every machine (so a run resumes with
    the schedule it started with). The check runs every epoch when the run acts on it
    (``early_stop``, or a method that needs it every epoch, such as the adaptive
    curriculum)."""
    ev = cfg.evaluation
    method, options = method_class(cfg.attack.method), cfg.attack.options
    epoch_work = n_train * (cfg.attack_steps + 1) * method.updates_per_batch(options)
    n_val = n_test if ev.eval_limit is None else min(ev.eval_limit, n_test)
    validation_work = n_val * (ev.eval_steps + 1)
    check_work = min(ev.overfit_check_size, n_train) * (ev.eval_steps + 1)
    eval_every = ev.eval_every
    if eval_every == AUTO:
        eval_every = _auto_interval(validation_work, epoch_work, VALIDATION_SHARE)
    check_every = ev.overfit_check_every
    if check_every == AUTO:
        acts = ev.early_stop or method.needs_overfitting_check_every_epoch(options)
        check_every = 1 if acts else _auto_interval(check_work, epoch_work, CHECK_SHARE)
    return Intervals(int(eval_every), int(check_every), epoch_work, validation_work, check_work)


def _correct(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and PGD-attacked correct counts of one batch (device tensors, no host sync)."""
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).sum()
    x_adv = pgd(
        model, x, y, threat, steps=steps, step_size=pgd_step_size(cast(float, threat.eps), steps)
    )
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
    workers: int = WORKERS,
) -> tuple[float, float]:
    """Clean and PGD accuracy on a split (only its images ``indices``, e.g. a
    :func:`~fastrobust.data.subsets.stratified_subset`, when given), sharded across ranks
    with exact counts: rank r takes every world_size-th image from the r-th. Images on disk
    are decoded by ``workers`` DataLoader processes while the attack runs
    (:func:`~fastrobust.data.disk_loader.decoded_batches`)."""
    chosen = torch.arange(len(y)) if indices is None else indices.cpu()
    idx = chosen[world.rank :: world.world_size]
    counts = torch.zeros(3, device=device)
    was_training = model.training
    model.eval()
    batches = decoded_batches(x_uint8, batch_size, indices=idx, workers=workers)
    for xb, start in zip(batches, range(0, len(idx), batch_size)):
        b = idx[start : start + batch_size]
        clean, adv = _correct(model, to_float(xb.to(device)), y[b].to(device), threat, steps)
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
        x_adv = pgd(
            model,
            xb,
            yb,
            threat,
            steps=steps,
            step_size=pgd_step_size(cast(float, threat.eps), steps),
        )
        with torch.no_grad():
            model.eval()
            correct += (model(x_adv).argmax(1) == yb).sum()
    model.train(was_training)
    return float(correct) / max(len(y), 1)
