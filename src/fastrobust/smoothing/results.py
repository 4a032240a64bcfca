"""The result of certifying one model: its certificates and the certified-accuracy curve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastrobust.evaluation.results import describe_subset
from fastrobust.smoothing.check import SmoothedAttackCheck
from fastrobust.smoothing.core import ABSTAIN, Certificates


@dataclass
class CertificationCurve:
    """Certified accuracy vs L2 radius of one smoothed model (Cohen et al. 2019)."""

    certificates: Certificates
    radii: list[float]
    sigma: float
    n0: int
    n_samples: int
    alpha: float
    seed: int
    data: dict[str, Any]
    check: SmoothedAttackCheck | None = None
    shards: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.certificates)

    @property
    def counts(self) -> list[int]:
        return [self.certificates.certified_count(r) for r in self.radii]

    @property
    def accuracy(self) -> list[float]:
        return [count / max(self.n, 1) for count in self.counts]

    @property
    def abstain_rate(self) -> float:
        return sum(p == ABSTAIN for p in self.certificates.predictions) / max(self.n, 1)

    @property
    def subset(self) -> str:
        return describe_subset(self.data)

    @property
    def images_per_s(self) -> float:
        return self.n / self.certificates.time_s if self.certificates.time_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sigma": self.sigma,
            "n0": self.n0,
            "n": self.n_samples,
            "alpha": self.alpha,
            "seed": self.seed,
            "points": self.n,
            "data": self.data,
            "radii": self.radii,
            "certified_accuracy": self.accuracy,
            "certified": self.counts,
            "abstain_rate": self.abstain_rate,
            "time_s": round(self.certificates.time_s, 3),
            "samples": self.certificates.samples,
            "check": self.check.to_dict() if self.check is not None else None,
            "shards": self.shards,
            "notes": self.notes,
            "per_point": self.certificates.to_dict(),
        }
