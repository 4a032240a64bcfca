"""Evaluation: robustness curves (a cascade over eps), gradient-masking checks and reports.
See docs/architecture.md."""

from fastrobust.evaluation.curve import RobustnessCurve, robustness_curve

__all__ = ["RobustnessCurve", "robustness_curve"]
