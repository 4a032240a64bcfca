"""Evaluation: result types, typed settings, robustness curves (a cascade over eps),
gradient-masking checks, sharded evaluation over several processes, reports and the workflow
that evaluates saved models. See docs/architecture.md."""

from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.results import Check, RobustnessCurve
from fastrobust.evaluation.settings import CurveSettings, EvaluationSettings
from fastrobust.evaluation.sharding import sharded_robustness_curve
from fastrobust.evaluation.workflow import EvaluationResult, evaluate

__all__ = [
    "Check",
    "CurveSettings",
    "EvaluationResult",
    "EvaluationSettings",
    "RobustnessCurve",
    "evaluate",
    "robustness_curve",
    "sharded_robustness_curve",
]
