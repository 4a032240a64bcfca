"""Certified L2 robustness by Gaussian randomized smoothing (Cohen, Rosenfeld & Kolter, ICML
2019): the bounds (:mod:`~fastrobust.smoothing.bounds`), PREDICT and CERTIFY batched on the
device (:mod:`~fastrobust.smoothing.core`), the smoothed-classifier attack as an empirical
upper bound (:mod:`~fastrobust.smoothing.check`, Salman et al. 2019), typed settings and the
``certify`` workflow (``fastrobust certify``). Training for smoothing is the ``gaussian`` and
``smoothadv`` methods (:mod:`fastrobust.training.smoothing_methods`)."""

from fastrobust.smoothing.bounds import certified_radius, clopper_pearson_lower
from fastrobust.smoothing.core import Certificates, Smoothing, certify_points, predict_points
from fastrobust.smoothing.results import CertificationCurve
from fastrobust.smoothing.settings import CertifySettings
from fastrobust.smoothing.workflow import CertificationResult, certify, certify_model

__all__ = [
    "CertificationCurve",
    "CertificationResult",
    "Certificates",
    "CertifySettings",
    "Smoothing",
    "certified_radius",
    "certify",
    "certify_model",
    "certify_points",
    "clopper_pearson_lower",
    "predict_points",
]
