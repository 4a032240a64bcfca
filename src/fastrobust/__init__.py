"""fastrobust: fast adversarial training, honest robustness evaluation, robust representations.

Implements and extends Goodwin et al., "Fast Training of Deep Neural Networks Robust to
Adversarial Perturbations" (HPEC 2020).
"""

from fastrobust.attacks import L2, Linf, ThreatModel, fgsm, pgd, threat_model
from fastrobust.checkpoint import load_model
from fastrobust.data import load_dataset
from fastrobust.data.base import to_float
from fastrobust.evaluation import (
    CurveSettings,
    EvaluationSettings,
    RobustnessCurve,
    evaluate,
    robustness_curve,
)
from fastrobust.evaluation.report import write_report
from fastrobust.export import ExportSettings, export_model
from fastrobust.represent import (
    interpolate_representations,
    targeted_perturbation,
    visualize_features,
)
from fastrobust.training import TrainConfig, TrainResult, fit, resume
from fastrobust.version import __version__

__all__ = [
    "__version__",
    "CurveSettings",
    "EvaluationSettings",
    "ExportSettings",
    "L2",
    "Linf",
    "RobustnessCurve",
    "ThreatModel",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "export_model",
    "fgsm",
    "fit",
    "interpolate_representations",
    "load_dataset",
    "load_model",
    "pgd",
    "resume",
    "robustness_curve",
    "targeted_perturbation",
    "threat_model",
    "to_float",
    "visualize_features",
    "write_report",
]
