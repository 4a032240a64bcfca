"""Evaluation: result types, robustness curves (a cascade over eps), gradient-masking checks
and reports. See docs/architecture.md."""

from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.results import Check, RobustnessCurve

__all__ = ["Check", "RobustnessCurve", "robustness_curve"]
