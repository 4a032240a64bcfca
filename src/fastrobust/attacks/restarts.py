"""Restarts that keep the worst case per sample, and seeded per-sample random starts.

Every attack with restarts (:func:`fastrobust.pgd`, :func:`fastrobust.attacks.apgd.apgd`), the
robustness curve of Goodwin et al. (HPEC 2020), Figure 2 (:mod:`fastrobust.evaluation.curve`),
and its gradient-masking checks (:mod:`fastrobust.evaluation.masking`) restart through
:func:`worst_case_over_restarts`: a restart runs only on the samples no earlier one has fooled
(AutoAttack's robust mask, Croce & Hein 2020), and each sample keeps its worst case. The curve's
random starts are drawn per chunk from a generator seeded by ``(seed, chunk, eps index, attack
index, restart)`` (:func:`seeded_starts`), so a sample's start does not depend on which of its
neighbours are still attacked. See docs/architecture.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from fastrobust.attacks.threat import ThreatModel
from fastrobust.errors import ConfigError
from fastrobust.seeding import derive_seed


class AttackRun(NamedTuple):
    """One attack run (or the worst case over several), one row per sample."""

    delta: torch.Tensor
    """the perturbation"""
    fooled: torch.Tensor
    """bool: does it fool the model (see :func:`fastrobust.attacks.contract.is_fooled`)"""
    loss: torch.Tensor
    """the attack's objective at ``delta`` (higher is worse for the model)"""


#: ``run_once(active, restart)``: one run on the samples ``active`` (indices into the batch)
RunOnce = Callable[[torch.Tensor, int], AttackRun]


def worst_case_over_restarts(
    run_once: RunOnce,
    x: torch.Tensor,
    restarts: int,
    *,
    fooled: torch.Tensor | None = None,
) -> AttackRun:
    """Up to ``restarts`` runs, each on the samples still unfooled; the worst case per sample.

    A sample keeps the first run that fools it, else its highest-loss run. Samples marked in
    ``fooled`` (e.g. misclassified clean) are never attacked; their delta stays zero and their
    loss ``-inf``. Returns the kept deltas, which samples are fooled (initially or by a run) and
    the kept losses.
    """
    n = x.shape[0]
    best = torch.zeros_like(x)
    best_loss = torch.full((n,), -math.inf, device=x.device)
    fooled = torch.zeros(n, dtype=torch.bool, device=x.device) if fooled is None else fooled.clone()
    for restart in range(restarts):
        active = (~fooled).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        run = run_once(active, restart)
        loss = run.loss.float()
        kept_loss = best_loss[active]
        keep = run.fooled | (loss > kept_loss)
        # masked arithmetic over the active rows: no bool indexing, no host sync
        kept = best[active]
        best[active] = torch.where(keep.view(-1, *([1] * (kept.dim() - 1))), run.delta, kept)
        best_loss[active] = torch.where(keep, loss, kept_loss)
        fooled[active] = run.fooled
    return AttackRun(best, fooled, best_loss)


def check_start(start: torch.Tensor | None, x: torch.Tensor, restarts: int) -> None:
    """A given start must match ``x`` and cannot be restarted (every run would be the same)."""
    if start is None:
        return
    if start.shape != x.shape:
        raise ConfigError(f"start {tuple(start.shape)} does not match the input {tuple(x.shape)}")
    if restarts > 1:
        raise ConfigError("a given start cannot be restarted (every run would be the same)")


def seeded_generator(device: torch.device, *key: int) -> torch.Generator:
    """A torch generator on ``device`` seeded by :func:`derive_seed` of ``key``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(*key))
    return generator


def seeded_starts(
    threat: ThreatModel,
    x: torch.Tensor,
    *,
    seed: int,
    chunk: int,
    eps_index: int,
    attack_index: int,
    restart: int,
) -> torch.Tensor:
    """Random starts for a whole chunk ``x``; the curve gives row ``i`` to sample ``i``."""
    key = (seed, chunk, eps_index, attack_index, restart)
    return threat.sample(x, generator=seeded_generator(x.device, *key))
