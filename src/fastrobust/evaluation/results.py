"""Result types of evaluation: a robustness curve and its gradient-masking checks.

They live below the code that computes (:mod:`fastrobust.evaluation.curve`,
:mod:`fastrobust.evaluation.masking`) and reports them (:mod:`fastrobust.evaluation.report`),
so none of those imports another to name a type (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fastrobust.model_info import ModelInfo


@dataclass
class Check:
    """One gradient-masking check: its name, whether it passed, what it saw."""

    name: str
    passed: bool
    message: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "message": self.message, **self.values}


def describe_subset(data_info: dict[str, Any]) -> str:
    """``"a class-stratified sample of 100 of 360 test points (seed 0)"`` or
    ``"all 360 test points"``."""
    what = "test points" if data_info.get("split") == "test" else "given points"
    sample = data_info.get("sample")
    if sample:
        return (
            f"a class-stratified sample of {data_info['n']} of {data_info['n_available']} "
            f"{what} (seed {sample['seed']})"
        )
    return f"all {data_info['n']} {what}"


@dataclass
class RobustnessCurve:
    """Accuracy under attack at each eps, with how each sample was fooled and the checks."""

    norm: str
    eps: list[float]
    attacks: list[str]
    steps: int
    restarts: int
    step_size_factor: float
    random_start: str
    seed: int
    n: int
    clean_correct: int
    robust: list[int]
    """number of samples robust at each eps"""
    fooled_by: list[dict[str, int]]
    """per eps: samples misclassified clean, fooled at a smaller eps, or fooled by each attack"""
    robust_mask: torch.Tensor
    """``len(eps) x n`` booleans (CPU): is sample ``i`` robust at ``eps[j]``"""
    data: dict[str, Any]
    """dataset, split, n, n_available, limit and, under a limit, ``sample``: the seed,
    per-class counts and indices of the stratified subset evaluated"""
    model_info: ModelInfo = field(default_factory=ModelInfo)
    """what the model was trained with (method, norm, eps, dataset), when recorded"""
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attack_gradients: int = 0
    """input gradients the curve computed, summed over samples (its attack cost)"""
    time_s: float = 0.0
    checks_time_s: float = 0.0
    version: str | None = None
    """the AutoAttack version run (``autoattack``, ``autoattack-rand``), None for a custom list"""
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    """per attack: what it may spend per sample and eps (steps, restarts, targets, queries, eot)"""
    kernels: dict[str, Any] = field(default_factory=dict)
    """the kernels that computed it (:func:`fastrobust.kernels.kernel_record`): float32 matrix
    products and convolutions in ``ieee`` or ``tf32``, cuDNN autotuning, deterministic"""
    shards: list[dict[str, Any]] | None = None
    """evaluated by several processes (:mod:`fastrobust.evaluation.sharding`): per rank the
    points it took (``start``, ``stop``), its chunks and seconds; None in one process"""

    @property
    def accuracy(self) -> list[float]:
        return [r / self.n for r in self.robust]

    @property
    def clean_accuracy(self) -> float:
        return self.clean_correct / self.n

    @property
    def warnings(self) -> list[str]:
        """Messages of the failed gradient-masking checks."""
        return [c.message for c in self.checks if not c.passed]

    @property
    def subset(self) -> str:
        return describe_subset(self.data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-sample mask)."""
        out = {
            "norm": self.norm,
            "eps": self.eps,
            "accuracy": self.accuracy,
            "robust": self.robust,
            "clean_accuracy": self.clean_accuracy,
            "n": self.n,
            "subset": self.subset,
            "data": self.data,
            "attacks": self.attacks,
            "steps": self.steps,
            "restarts": self.restarts,
            "step_size": f"{self.step_size_factor:g}*eps/steps",
            "random_start": self.random_start,
            "seed": self.seed,
            "seeds": "random starts and Square's windows from streams (seed, chunk, eps index, "
            "attack index, restart); chunks are batch_size consecutive points",
            "version": self.version,
            "budgets": self.budgets,
            "fooled_by": self.fooled_by,
            "trained": self.model_info.trained_with(),
            "checks": [c.to_dict() for c in self.checks],
            "warnings": self.warnings,
            "notes": self.notes,
            "attack_gradients": self.attack_gradients,
            "time_s": round(self.time_s, 3),
            "checks_time_s": round(self.checks_time_s, 3),
            "kernels": self.kernels,
        }
        if self.shards is not None:
            out["shards"] = self.shards
        return out

    @classmethod
    def from_dict(cls, doc: dict[str, Any], model_info: ModelInfo | None = None) -> RobustnessCurve:
        """The curve of a :meth:`to_dict` document (its ``to_dict`` is that document again),
        so a report can be written from curves saved earlier. The document holds no
        per-sample mask (``robust_mask`` is empty) and only what the model was trained with,
        so ``model_info`` (the model's own, when at hand) replaces it."""
        n = doc["n"]
        checks = [
            Check(
                c["name"],
                c["passed"],
                c["message"],
                {k: v for k, v in c.items() if k not in ("name", "passed", "message")},
            )
            for c in doc["checks"]
        ]
        return cls(
            norm=doc["norm"],
            eps=list(doc["eps"]),
            attacks=list(doc["attacks"]),
            steps=doc["steps"],
            restarts=doc["restarts"],
            step_size_factor=float(doc["step_size"].split("*")[0]),
            random_start=doc["random_start"],
            seed=doc["seed"],
            n=n,
            clean_correct=round(doc["clean_accuracy"] * n),
            robust=list(doc["robust"]),
            fooled_by=list(doc["fooled_by"]),
            robust_mask=torch.zeros(0, 0, dtype=torch.bool),
            data=doc["data"],
            model_info=model_info if model_info is not None else ModelInfo(),
            checks=checks,
            notes=list(doc["notes"]),
            attack_gradients=doc["attack_gradients"],
            time_s=doc["time_s"],
            checks_time_s=doc["checks_time_s"],
            version=doc["version"],
            budgets=doc["budgets"],
            kernels=dict(doc.get("kernels", {})),
            shards=doc.get("shards"),
        )
