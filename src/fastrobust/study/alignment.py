"""The perceptual-alignment score: the fraction of large targeted perturbations an independent
judge assigns to the target class, with a bootstrap interval.

Goodwin et al. (HPEC 2020, Figure 5) show that large targeted perturbations of robust models
(fast or 7-step adversarial training) draw the target class into the image, while a standard
model's stay noise-like, and judge it by eye. Here the same perturbations
(:func:`fastrobust.targeted_perturbation`: targeted PGD on the cross-entropy of the target,
L2 ball of radius ``eps``) are shown to a judge (:mod:`fastrobust.study.judges`) that did not
take part in making them. The score of a model at a budget is the share of perturbed images
the judge calls "the target"; its 95% interval is the percentile bootstrap over images.

Every model is scored on the *same* source images and targets: test images that every judge
classifies correctly (so a "target" verdict is a change the perturbation made), each with a
target class drawn at random among the other classes, from the study's seed.

Two budgets answer two questions: at a large one every model can reach the target, and the
question is whether the change looks like the target; at a small one (e.g. the training eps)
a standard model cannot redraw the image, while a robust model's gradient already points
toward the target's features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from fastrobust.errors import DataError
from fastrobust.represent import Norm, targeted_perturbation
from fastrobust.study.judges import Judge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignmentScore:
    """One model, one judge, one budget."""

    model: str
    judge: str
    eps: float
    n: int
    judged_target: int
    """perturbed images the judge assigned to the target class"""
    low: float
    """2.5th percentile of the bootstrap distribution of the score"""
    high: float
    """97.5th percentile"""
    model_reached: int
    """perturbed images the model itself classifies as the target"""

    @property
    def score(self) -> float:
        return self.judged_target / self.n if self.n else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"] = self.score
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlignmentScore:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def bootstrap_interval(
    hits: torch.Tensor, *, samples: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector (resampling images)."""
    n = hits.numel()
    if n == 0:
        return float("nan"), float("nan")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (samples, n), generator=g)
    means = hits.float().cpu()[idx].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail])).tolist()
    return float(low), float(high)


def choose_sources(
    x: torch.Tensor,
    y: torch.Tensor,
    judges: Sequence[Judge],
    n: int,
    num_classes: int,
    *,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(indices, targets)``: up to ``n`` test images every judge classifies correctly, in a
    seeded random order, each with a random target class other than its own."""
    g = torch.Generator().manual_seed(seed)
    ok = torch.ones(len(y), dtype=torch.bool)
    for judge in judges:
        ok &= (judge(x) == y.to(x.device)).cpu()
    pool = ok.nonzero().squeeze(1)
    if pool.numel() == 0:
        raise DataError("no test image is classified correctly by every judge")
    idx = pool[torch.randperm(pool.numel(), generator=g)[:n]].sort().values
    shift = torch.randint(1, num_classes, (idx.numel(),), generator=g)
    targets = (y.cpu()[idx] + shift) % num_classes
    return idx, targets


def score_model(
    model: nn.Module,
    label: str,
    x: torch.Tensor,
    targets: torch.Tensor,
    judges: Sequence[Judge],
    budgets: Sequence[float],
    *,
    steps: int,
    bootstrap: int = 2000,
    seed: int = 0,
    norm: Norm = "l2",
) -> tuple[list[AlignmentScore], dict[float, torch.Tensor]]:
    """Scores of one model under every judge at every budget, and the perturbed images per
    budget (for the report's example grid)."""
    scores, images = [], {}
    targets = targets.to(x.device)
    for eps in budgets:
        res = targeted_perturbation(model, x, targets, norm=norm, eps=eps, steps=steps)
        images[eps] = res.images.detach().cpu()
        reached = int((res.extra["pred"] == targets).sum())
        for judge in judges:
            hits = judge(res.images) == targets
            low, high = bootstrap_interval(hits, samples=bootstrap, seed=seed)
            scores.append(
                AlignmentScore(
                    model=label,
                    judge=judge.name,
                    eps=float(eps),
                    n=int(hits.numel()),
                    judged_target=int(hits.sum()),
                    low=low,
                    high=high,
                    model_reached=reached,
                )
            )
            log.info(
                "%s, eps %g, judge %s: %.1f%% judged the target (model reached %d/%d)",
                label,
                eps,
                judge.name,
                100 * scores[-1].score,
                reached,
                hits.numel(),
            )
    return scores, images
