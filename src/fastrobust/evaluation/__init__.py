"""Evaluation: result types, robustness curves (a cascade over eps), gradient-masking checks,
sharded evaluation over several processes and reports. See docs/architecture.md."""

from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.results import Check, RobustnessCurve
from fastrobust.evaluation.sharding import sharded_robustness_curve

__all__ = ["Check", "RobustnessCurve", "robustness_curve", "sharded_robustness_curve"]
