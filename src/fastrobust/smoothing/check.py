"""The empirical upper bound on certified accuracy: the smoothed-classifier attack.

A point certified at radius ``R`` keeps its smoothed prediction for every perturbation of L2
norm ``<= R`` (with probability ``1 - alpha``), so the accuracy of the smoothed classifier under
any attack at radius ``r`` bounds the certified accuracy at ``r`` from above. The attack is
SmoothAdv's PGD on the Monte-Carlo soft classifier (Salman et al., NeurIPS 2019;
:func:`~fastrobust.attacks.smoothed.smoothed_pgd`), the smoothed prediction at the attacked
point a majority vote of ``check_n`` fresh draws. The check fails when certified accuracy at
some radius exceeds the attacked accuracy there (a wrong certificate, a broken bound, or
noise that differs between certification and attack), and reports the certified points the
attack flipped inside their radius. It is reported beside the gradient-masking checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastrobust.attacks.restarts import seeded_generator
from fastrobust.attacks.smoothed import smoothed_pgd
from fastrobust.attacks.threat import threat_model
from fastrobust.smoothing.core import NOISE_STREAM, VOTE, Certificates, Smoothing, predict_points

#: stream id of the attack's random starts and Monte-Carlo draws
ATTACK_STREAM = 0x41545441


@dataclass
class SmoothedAttackCheck:
    """Certified vs attacked accuracy of the smoothed classifier on the check's points."""

    radii: list[float]
    certified: list[float]
    """certified accuracy at each radius on the check's points"""
    attacked: list[float]
    """the smoothed classifier's accuracy under the attack at each radius"""
    flipped: list[int]
    """points certified at ``>= r`` whose vote at the attacked point is wrong, per radius"""
    n: int
    steps: int
    samples: int
    votes: int
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c <= a for c, a in zip(self.certified, self.attacked))

    @property
    def message(self) -> str:
        pairs = ", ".join(
            f"r={r:g}: certified {c:.3f} <= attacked {a:.3f}"
            if c <= a
            else f"r={r:g}: certified {c:.3f} > attacked {a:.3f}"
            for r, c, a in zip(self.radii, self.certified, self.attacked)
        )
        flips = sum(self.flipped)
        tail = f"; {flips} certified point(s) flipped inside their radius" if flips else ""
        return f"{pairs}{tail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": "smoothed_attack_upper_bound",
            "passed": self.passed,
            "message": self.message,
            "radii": self.radii,
            "certified": self.certified,
            "attacked": self.attacked,
            "flipped": self.flipped,
            "n": self.n,
            "steps": self.steps,
            "samples": self.samples,
            "votes": self.votes,
        }


def attacked_votes(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    radius: float,
    smoothing: Smoothing,
    *,
    steps: int,
    samples: int,
    votes: int,
    batch: int = 16,
) -> list[int]:
    """The smoothed majority vote (``votes`` draws) at SmoothAdv's L2 attack of radius
    ``radius`` on each point (``samples`` Monte-Carlo draws per attack step)."""
    threat = threat_model("l2", radius)
    generator = seeded_generator(x.device, ATTACK_STREAM, smoothing.seed, round(radius * 1e6))
    adv = []
    for lo in range(0, len(x), batch):
        xb, yb = x[lo : lo + batch], y[lo : lo + batch]
        adv.append(
            smoothed_pgd(
                model,
                xb,
                yb,
                threat,
                sigma=smoothing.sigma,
                samples=samples,
                steps=steps,
                generator=generator,
            )
        )
    vote = Smoothing(
        smoothing.sigma,
        1,
        votes,
        smoothing.alpha,
        min(smoothing.batch_size, votes),
        smoothing.seed ^ NOISE_STREAM,
    )
    return predict_points(model, torch.cat(adv), vote, stage=VOTE, abstain=False)


def smoothed_attack_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    certificates: Certificates,
    smoothing: Smoothing,
    *,
    radii: list[float],
    steps: int,
    samples: int,
    votes: int,
) -> SmoothedAttackCheck:
    """Attack the smoothed classifier at each radius on the points ``x`` (the first points of
    ``certificates``) and compare with their certified accuracy."""
    k = len(x)
    mine = certificates.head(k)
    certified, attacked, flipped = [], [], []
    for r in radii:
        pred = attacked_votes(model, x, y, r, smoothing, steps=steps, samples=samples, votes=votes)
        right = [p == int(t) for p, t in zip(pred, y)]
        certified.append(mine.certified_accuracy(r))
        attacked.append(sum(right) / k)
        flipped.append(
            sum(
                (c == t and rad is not None and rad >= r and not ok)
                for c, t, rad, ok in zip(mine.predictions, mine.labels, mine.radii, right)
            )
        )
    return SmoothedAttackCheck(radii, certified, attacked, flipped, k, steps, samples, votes)
