"""Attacks: threat models (L2, Linf), the attack contract, one projected-gradient loop (PGD,
FGSM), APGD, FAB, Square, the restarts helper and the attacks a curve runs by name (registered
specs: :class:`AttackSpec`, :func:`register_attack`). See docs/architecture.md."""

from fastrobust.attacks.apgd import apgd, dlr_loss
from fastrobust.attacks.contract import (
    BNMode,
    attack_mode,
    cross_entropy_per_sample,
    input_gradient,
    is_fooled,
    pgd_step_size,
)
from fastrobust.attacks.fab import MinimalPerturbation, fab
from fastrobust.attacks.projected_gradient import fgsm, pgd
from fastrobust.attacks.registry import (
    AttackSpec,
    RunSettings,
    attack_names,
    attack_spec,
    register_attack,
    unregister_attack,
)
from fastrobust.attacks.restarts import AttackRun, worst_case_over_restarts
from fastrobust.attacks.square import square
from fastrobust.attacks.threat import L2, THREAT_MODELS, Linf, ThreatModel, threat_model

__all__ = [
    "AttackSpec",
    "BNMode",
    "L2",
    "THREAT_MODELS",
    "AttackRun",
    "Linf",
    "MinimalPerturbation",
    "RunSettings",
    "ThreatModel",
    "apgd",
    "attack_mode",
    "attack_names",
    "attack_spec",
    "cross_entropy_per_sample",
    "dlr_loss",
    "fab",
    "fgsm",
    "input_gradient",
    "is_fooled",
    "pgd",
    "pgd_step_size",
    "register_attack",
    "square",
    "threat_model",
    "unregister_attack",
    "worst_case_over_restarts",
]
