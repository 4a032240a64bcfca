"""Typed settings of an evaluation: the attack budget, the points evaluated, the checks.

Every default of a robustness evaluation is written here once (the paper's 20 steps and 10
restarts, Goodwin et al. 2020; Square's queries and APGD's targets and EOT come from the
attack layer's :class:`~fastrobust.attacks.registry.RunSettings`), and every range rule with
it (:mod:`fastrobust.settings`). :class:`CurveSettings` is what
:func:`~fastrobust.evaluation.curve.robustness_curve` takes; :class:`EvaluationSettings` adds
what the evaluation workflow resolves around it (norm, eps grid, dataset, output folder) and
is what ``fastrobust eval`` builds its flags from. The study's ``evaluation`` section is a
:class:`CurveSettings` too, so both name a mistake the same way (``evaluation.steps must be
>= 1, got 0``; the command line says ``--steps``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from fastrobust.attacks.contract import PGD_STEP_FACTOR, BNMode
from fastrobust.attacks.registry import VERSIONS, RunSettings
from fastrobust.data.disk_loader import WORKERS
from fastrobust.errors import ConfigError
from fastrobust.evaluation.inputs import parse_eps_list, validate_attacks, validate_eps_list
from fastrobust.settings import at_least, check_settings, non_negative, positive, setting
from fastrobust.tracking.settings import TrackingSettings

#: the paper's evaluation (Goodwin et al. 2020, Figure 2; Madry et al. 2018): 20-step PGD...
STEPS = 20
#: ...with 10 random restarts, a sample robust only if none fools it
RESTARTS = 10

#: the section name of these settings in errors (``evaluation.steps``) and in a study config
SECTION = "evaluation"

Norm = Literal["l2", "linf"]
RandomStart = Literal["ball", "sphere", "radius", "none"]


@dataclass
class CurveSettings:
    """How a robustness curve is measured: the attack budget, the points, the checks."""

    attacks: list[str] = setting(factory=lambda: ["pgd"], flag="--attack", text=True)
    """attack, or a comma-separated cascade run in order on the still-robust points: pgd,
    apgd-ce, apgd-dlr, apgd-t, fab-t, fab, square (e.g. pgd,apgd-ce,apgd-dlr); or autoattack
    (AutoAttack's standard version: apgd-ce, apgd-t, fab-t, square with its budgets) or
    autoattack-rand (apgd-ce, apgd-dlr with EOT)"""
    steps: int | None = setting(None, rule=at_least(1))
    """attack steps (None: 20, or an AutoAttack version's own; per target for apgd-t, fab-t)"""
    restarts: int | None = setting(None, rule=at_least(1))
    """random restarts of pgd, apgd-ce, apgd-dlr (None: 10, or an AutoAttack version's own)"""
    step_size_factor: float = setting(PGD_STEP_FACTOR, rule=positive())
    """PGD step size as a multiple of eps/steps"""
    targets: int = setting(RunSettings.targets, rule=at_least(1))
    """target classes of apgd-t and fab-t, clipped to classes-1"""
    queries: int = setting(RunSettings.queries, rule=at_least(1))
    """queries of the square attack"""
    eot: int = setting(RunSettings.eot, rule=at_least(1))
    """gradients averaged per APGD step, for randomised models"""
    random_start: RandomStart | None = None
    """random start: ball (uniform in the ball, the paper's), sphere, radius (torchattacks'),
    none (None: the threat model's, ball)"""
    bn_mode: BNMode = "eval"
    """BatchNorm mode of the model while it is attacked"""
    limit: int | None = setting(None, rule=at_least(1))
    """evaluate on a class-stratified sample of N test points, drawn from the seed (None: all)"""
    batch_size: int = setting(500, rule=at_least(1))
    """samples per chunk"""
    seed: int = setting(0, rule=non_negative())
    """seed of the random starts (and of the sample under a limit)"""
    checks: bool = True
    """gradient-masking checks"""
    check_size: int = setting(64, rule=at_least(1))
    """samples each gradient-masking check runs on"""
    tf32: bool = False
    """run float32 matrix products and convolutions as TF32 on Ampere and later GPUs (faster,
    10-bit mantissa); by default evaluation runs in IEEE fp32, so an adversarial example
    re-checked on another batch shape gets the same answer (recorded as the curve's kernels)"""

    def __post_init__(self) -> None:
        if isinstance(self.attacks, str):
            self.attacks = validate_attacks(self.attacks, field=f"{SECTION}.attacks")
        check_settings(self, SECTION)
        self.attacks = validate_attacks(self.attacks, field=f"{SECTION}.attacks")
        version = self.version
        if version is not None:
            given = [name for name in ("steps", "restarts") if getattr(self, name) is not None]
            if given:
                raise ConfigError(
                    f"{version} runs AutoAttack's own budgets: leave {SECTION}.{given[0]} out, "
                    f"or list its attacks ({','.join(VERSIONS[version][0])}) to choose them",
                    field=f"{SECTION}.{given[0]}",
                )

    @property
    def version(self) -> str | None:
        """The AutoAttack version asked for (``autoattack``, ``autoattack-rand``), else None."""
        return self.attacks[0] if self.attacks[0] in VERSIONS else None

    def curve_only(self, **changes: Any) -> CurveSettings:
        """Just these fields (a subclass's extra fields dropped), with ``changes``: what a
        report records."""
        names = [f.name for f in dataclasses.fields(CurveSettings)]
        return CurveSettings(**({name: getattr(self, name) for name in names} | changes))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class EvaluationSettings(CurveSettings, TrackingSettings):
    """An evaluation of saved models: the curve's settings, where models, data and results
    are (each left out is read from the first model), the experiment trackers it logs to."""

    norm: Norm | None = None
    """threat model (None: the norm the first model was trained with)"""
    eps: list[float] | None = setting(None, text=True)
    """comma-separated, strictly increasing eps values; fractions such as 8/255 allowed
    (None: 0, e/4, e/2, e, 2e for the first model's training eps e)"""
    dataset: str | None = setting(None, flag="--data")
    """dataset (None: the one the first model was trained on)"""
    data_dir: str | None = None
    """folder holding the dataset files (None: the folder the first model was trained from,
    when evaluating on its dataset)"""
    arch: str | None = None
    """architecture of checkpoints not written by fastrobust (MadryLab robustness or
    torchvision-layout ResNets): resnet18, resnet50, ... optionally _imagenet/_cifar (None:
    read from the checkpoint's tensors); their dataset comes from the dataset setting"""
    out: str | None = None
    """output folder (None: a new eval-<timestamp> next to the first run)"""
    import_model_factory: bool = False
    """import and run the package.module:factory model a checkpoint names (only for
    checkpoints you trust; by default only registered models load)"""
    weights: Literal["auto", "ema", "raw"] = "auto"
    """which weights of a run trained with --weight-average: auto (the average when the
    checkpoint has one), ema (the average), raw (the trained weights); recorded in the report"""
    device: str = "auto"
    """auto (GPU if any), cpu, cuda, cuda:1, ..."""
    workers: int = setting(WORKERS, rule=at_least(0))
    """DataLoader worker processes that decode the images of a disk dataset (imagefolder,
    restricted_imagenet) while the attacks run (0: decode in the main process); the results
    do not depend on it"""
    progress: bool = True
    """progress bar on stderr"""

    def __post_init__(self) -> None:
        name = f"{SECTION}.eps"
        if isinstance(self.eps, str):
            self.eps = parse_eps_list(self.eps, field=name)
        elif isinstance(self.eps, list | tuple) and all(_is_number(e) for e in self.eps):
            self.eps = validate_eps_list(self.eps, field=name)
        super().__post_init__()  # types (an eps list of text, say), ranges, the attacks


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
