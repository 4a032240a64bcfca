"""Cohen, Rosenfeld & Kolter's PREDICT and CERTIFY (ICML 2019, Algorithm / Section 3.2), batched
on the model's device.

For a point ``x`` the base classifier ``f`` is run on ``x + N(0, sigma^2 I)`` noise draws in
forward passes of ``batch_size`` and the predicted classes are counted. CERTIFY takes the top
class of ``n0`` draws, then bounds its probability from ``n`` fresh draws with a one-sided
Clopper-Pearson bound at ``alpha``: below 1/2 it abstains, else it certifies the radius
``sigma * Phi^-1(p_lower)``. PREDICT returns the top class of ``n`` draws unless the binomial
test of the top two counts is above ``alpha`` (abstain).

Each point's draws come from a generator keyed by (seed, the point's index in the whole set,
the stage), so a point gets the same noise, in the same forward passes, however the set is
split over processes or chunks: the same seed gives the same certificates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastrobust.attacks.contract import attack_mode, looks_like_probabilities
from fastrobust.attacks.restarts import seeded_generator
from fastrobust.errors import DataError
from fastrobust.smoothing.bounds import binomial_p_value, certified_radius, clopper_pearson_lower

log = logging.getLogger(__name__)

#: stream id of the certification noise in the ``derive_seed`` key
NOISE_STREAM = 0x534D4F4F
#: stages of a point's noise: CERTIFY's selection and estimation draws, PREDICT's, the check's
SELECT, ESTIMATE, PREDICT, VOTE = 0, 1, 2, 3
#: the class a point gets when the smoothed classifier abstains
ABSTAIN = -1


def noise_generator(device: torch.device, seed: int, index: int, stage: int) -> torch.Generator:
    """The generator of point ``index``'s draws for ``stage`` (independent of how the set is
    split)."""
    return seeded_generator(device, NOISE_STREAM, seed, index, stage)


@torch.no_grad()
def sample_counts(
    model: nn.Module,
    x: torch.Tensor,
    *,
    sigma: float,
    num: int,
    batch_size: int,
    classes: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """How often ``model`` predicts each class on ``num`` draws of ``x + N(0, sigma^2 I)``
    (``x`` one image, C x H x W), in forward passes of at most ``batch_size``; a ``classes``
    long int64 tensor on ``x``'s device. The model must be in the mode wanted (eval)."""
    counts = torch.zeros(classes, dtype=torch.long, device=x.device)
    left = num
    while left > 0:
        size = min(batch_size, left)
        noise = torch.randn((size, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
        pred = model(x.unsqueeze(0) + noise * sigma).argmax(1)
        counts += torch.bincount(pred, minlength=classes)
        left -= size
    return counts


@dataclass
class Certificates:
    """The certificates of a set of points: per point, the label, the smoothed prediction
    (:data:`ABSTAIN` = -1), the radius (None when abstaining), the lower bound on the top
    class's probability and its count among the ``n`` draws."""

    labels: list[int] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
    radii: list[float | None] = field(default_factory=list)
    p_lower: list[float] = field(default_factory=list)
    top_counts: list[int] = field(default_factory=list)
    time_s: float = 0.0
    samples: int = 0
    """noisy forward samples drawn"""

    def __len__(self) -> int:
        return len(self.labels)

    def certified_accuracy(self, radius: float) -> float:
        """Share of points predicted correctly with a certified radius ``>= radius``."""
        return self.certified_count(radius) / max(len(self), 1)

    def certified_count(self, radius: float) -> int:
        return sum(
            p == y and r is not None and r >= radius
            for y, p, r in zip(self.labels, self.predictions, self.radii)
        )

    def extend(self, other: Certificates) -> None:
        """Append ``other``'s points (the next shard); times are the slower one's."""
        self.labels += other.labels
        self.predictions += other.predictions
        self.radii += other.radii
        self.p_lower += other.p_lower
        self.top_counts += other.top_counts
        self.samples += other.samples
        self.time_s = max(self.time_s, other.time_s)

    def head(self, k: int) -> Certificates:
        """The first ``k`` points."""
        return Certificates(
            self.labels[:k],
            self.predictions[:k],
            self.radii[:k],
            self.p_lower[:k],
            self.top_counts[:k],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.labels,
            "prediction": self.predictions,
            "radius": self.radii,
            "p_lower": self.p_lower,
            "top_count": self.top_counts,
        }


@dataclass(frozen=True)
class Smoothing:
    """What a certificate depends on: the noise, the sample sizes, the confidence, the seed."""

    sigma: float
    n0: int
    n: int
    alpha: float
    batch_size: int
    seed: int = 0


def check_logits(model: nn.Module, x: torch.Tensor) -> int:
    """The model's number of classes; DataError if its output is not a row of logits per
    sample (probabilities, a vector), checked on a few clean points before any sampling."""
    with attack_mode(model, "eval"), torch.no_grad():
        out = model(x[:4])
    if out.dim() != 2 or out.shape[0] != len(x[:4]) or out.shape[1] < 2:
        raise DataError(
            f"the model must output one row of logits per sample, got shape {tuple(out.shape)}"
        )
    if looks_like_probabilities(out.float()):
        raise DataError(
            "the model outputs probabilities (rows >= 0 summing to 1), not logits; give the "
            "model before its softmax"
        )
    return int(out.shape[1])


def certify_points(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    smoothing: Smoothing,
    *,
    first_index: int = 0,
    on_point: Callable[[], None] | None = None,
) -> Certificates:
    """CERTIFY (Cohen et al. 2019) for each point of ``x`` (floats in [0,1] on the model's
    device), point ``i`` keyed as ``first_index + i`` of the whole set."""
    if len(x) == 0:
        return Certificates()
    classes = check_logits(model, x)
    s, out, start = smoothing, Certificates(), time.perf_counter()
    with attack_mode(model, "eval"):
        for i in range(len(x)):
            index = first_index + i

            def draws(num: int, stage: int, point: torch.Tensor = x[i], k: int = index) -> Any:
                gen = noise_generator(point.device, s.seed, k, stage)
                return sample_counts(
                    model,
                    point,
                    sigma=s.sigma,
                    num=num,
                    batch_size=s.batch_size,
                    classes=classes,
                    generator=gen,
                )

            top = int(draws(s.n0, SELECT).argmax())
            count = int(draws(s.n, ESTIMATE)[top])
            p_lower = clopper_pearson_lower(count, s.n, s.alpha)
            radius = certified_radius(p_lower, s.sigma)
            out.labels.append(int(y[i]))
            out.predictions.append(ABSTAIN if radius is None else top)
            out.radii.append(radius)
            out.p_lower.append(p_lower)
            out.top_counts.append(count)
            if on_point is not None:
                on_point()
    out.samples = len(x) * (s.n0 + s.n)
    out.time_s = time.perf_counter() - start
    return out


def predict_points(
    model: nn.Module,
    x: torch.Tensor,
    smoothing: Smoothing,
    *,
    first_index: int = 0,
    stage: int = PREDICT,
    abstain: bool = True,
) -> list[int]:
    """PREDICT (Cohen et al. 2019): the top class of ``n`` draws per point, or
    :data:`ABSTAIN` when the two-sided binomial test of the top two counts exceeds ``alpha``
    (``abstain=False``: the plain majority vote)."""
    classes = check_logits(model, x)
    s, predictions = smoothing, []
    with attack_mode(model, "eval"):
        for i in range(len(x)):
            gen = noise_generator(x.device, s.seed, first_index + i, stage)
            counts = sample_counts(
                model,
                x[i],
                sigma=s.sigma,
                num=s.n,
                batch_size=s.batch_size,
                classes=classes,
                generator=gen,
            )
            two = counts.topk(2)
            n_a, n_b = int(two.values[0]), int(two.values[1])
            if abstain and binomial_p_value(n_a, n_a + n_b) > s.alpha:
                predictions.append(ABSTAIN)
            else:
                predictions.append(int(two.indices[0]))
    return predictions
