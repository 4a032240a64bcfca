"""Attacks: threat models (L2, Linf), one projected-gradient loop (PGD, FGSM), APGD, and the
seeded restart helper every caller shares. See docs/architecture.md."""

from fastrobust.attacks.apgd import apgd, dlr_loss
from fastrobust.attacks.projected_gradient import (
    BNMode,
    accuracy,
    attack_mode,
    cross_entropy_per_sample,
    fgsm,
    input_gradient,
    pgd,
)
from fastrobust.attacks.threat import L2, THREAT_MODELS, Linf, ThreatModel, threat_model

__all__ = [
    "BNMode",
    "L2",
    "THREAT_MODELS",
    "Linf",
    "ThreatModel",
    "accuracy",
    "apgd",
    "attack_mode",
    "cross_entropy_per_sample",
    "dlr_loss",
    "fgsm",
    "input_gradient",
    "pgd",
    "threat_model",
]
