"""Typed training configuration in sections: YAML in, flags override, resolved YAML written to
the run folder (see docs/architecture.md).

A :class:`TrainConfig` holds five sections, one dataclass each: :class:`DataConfig` (``data``),
:class:`AttackConfig` (``attack``), :class:`OptimisationConfig` (``optimisation``),
:class:`EvaluationConfig` (``evaluation``) and :class:`RuntimeConfig` (``runtime``). Field
names are unique across sections, so a config can also be written flat: ``TrainConfig(eps=0.5,
epochs=3)``, ``cfg.eps`` and flat YAML files (the format before sections, still used by
``configs/*.yaml`` and recorded in checkpoints) all route each name to its section.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastrobust.attacks.threat import THREAT_MODELS, ThreatModel, threat_model
from fastrobust.errors import ConfigError
from fastrobust.settings_types import check_field_types
from fastrobust.training.collapse_resistant import CURRICULUM_SCHEDULES
from fastrobust.training.methods import method_class, method_names

SCHEDULES = ("step", "onecycle", "constant")
SUBSET_CHOICES = ("stratified", "legacy")
AUTO = "auto"
#: eval_every auto: validation's attack work at most this share of an epoch's training work
VALIDATION_SHARE = 0.04
#: overfit_check_every auto: the check's attack work at most this share of it (with the
#: validation at the last epoch and the checkpoints, the goal is <= 10% outside training)
CHECK_SHARE = 0.02


def _positive(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def _non_negative(name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be >= 0, got {value}")


def _at_least(name: str, value: Any, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _interval(name: str, value: Any) -> None:
    if value != AUTO and (isinstance(value, str) or value < 1):
        raise ConfigError(f"{name} must be a whole number of epochs >= 1 or auto, got {value!r}")


def _one_of(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


@dataclass
class DataConfig:
    """Which images to train on and how they are fed."""

    dataset: str = "digits"
    """dataset name: digits (bundled), cifar10, cifar100, imagefolder, restricted_imagenet"""
    data_dir: str | None = None
    """folder holding the dataset files (CIFAR python-version folder, image folder root); stored
    absolute, so eval and visualize find it again when no --data-dir is given"""
    image_size: int | None = None
    """resize images to this size (imagefolder: default the first image's size;
    restricted_imagenet: 224; digits: upsampled from 8, bilinear)"""
    workers: int = 2
    """DataLoader worker processes for disk datasets"""
    augment: bool = True
    """augment training images: a random crop (pad-crop below 64 px, the random-resized crop of
    ImageNet recipes for disk images of 64 px and more) and flips if on; off: neither"""
    flip: bool | None = None
    """random horizontal flips (default: the dataset's: on for photos, cifar10/100 and
    restricted_imagenet; off for digits and imagefolder, whose images may be digits or text
    that a mirror makes wrong)"""
    crop_padding: int | None = None
    """zero padding of the pad-crop in pixels, 0: no crop (default: the dataset's: digits 1,
    cifar 4, disk images below 64 px size // 8; 64 px and more use the random-resized crop)"""
    color_jitter: float = 0.0
    """disk images of 64 px and more: brightness/contrast/saturation jitter strength (MadryLab
    robustness uses 0.1 for Restricted ImageNet; 0: off)"""
    lighting: float = 0.0
    """disk images of 64 px and more: std of AlexNet's PCA lighting noise (robustness: 0.05)"""

    def __post_init__(self) -> None:
        check_field_types(self, "data")
        if not 0 <= self.color_jitter < 1 or self.lighting < 0:
            raise ConfigError(
                f"color_jitter must be in [0,1) and lighting >= 0, got {self.color_jitter} "
                f"and {self.lighting}"
            )
        if self.data_dir:  # absolute, so a checkpoint's recorded folder works from anywhere
            self.data_dir = str(Path(self.data_dir).expanduser().resolve())
        if self.image_size is not None:
            _at_least("image_size", self.image_size, 1)
        _at_least("workers", self.workers, 0)
        if self.crop_padding is not None:
            _at_least("crop_padding", self.crop_padding, 0)


@dataclass
class AttackConfig:
    """The training method and the threat model its attack works in."""

    method: str = "fast"
    """training method (fastrobust.training.methods): standard | fast (one random-start step,
    Goodwin et al. 2020) | pgd (K steps) | n-fgsm (large noise, one step, de Jorge et al.
    2022) | gradalign (fast + gradient alignment, Andriushchenko & Flammarion 2020) | free
    (replayed batches, Shafahi et al. 2019) | curriculum (fast growing to K-step PGD)"""
    norm: str = "l2"
    """threat model: l2 | linf"""
    eps: float = 1.0
    """perturbation radius in [0,1] pixel units (also the validation attack's); must leave
    part of the [0,1] box out of reach: below 1 for linf, below sqrt(C*H*W) for l2 (checked
    once the data is loaded)"""
    alpha: float | None = None
    """step size; default 1.5*eps (fast, gradalign: L2), 1.25*eps (fast, gradalign: Linf),
    2.5*eps/steps (pgd, curriculum's multi-step epochs), eps (n-fgsm, free); refused with
    standard training (no attack)"""
    steps: int | None = None
    """attack steps per batch; default 1 for fast, 7 for pgd (curriculum: the final K, 7);
    refused with standard training, and fast, n-fgsm, gradalign and free are one step by
    definition (for more, use pgd)"""
    random_start: str = "ball"
    """random start: ball (uniform in the ball, the paper), sphere, radius (L2 only), none"""
    bn_mode: str = "eval"
    """BatchNorm mode while crafting training attacks: eval (paper's code) or train"""
    noise_factor: float | None = None
    """n-fgsm: radius of the uniform noise as a multiple of eps; default 2 for Linf (de Jorge
    et al. 2022), 1 for L2 (docs/catastrophic_overfitting.md)"""
    gradalign_lambda: float | None = None
    """gradalign: weight of the alignment penalty; default the paper's for the eps (L-inf:
    0.02*10**(255*eps/8), 0.2 at 8/255, at most 2.0; L2: 0.2)"""
    replays: int = 4
    """free: weight updates per batch (m); the run lasts ceil(epochs / replays) epochs"""
    curriculum: str = "linear"
    """curriculum: how the attack grows from 1 step to --steps (default 7): linear | switch
    (at --curriculum-switch) | adaptive (when fixed-batch PGD accuracy stalls or collapses)"""
    curriculum_switch: float = 0.5
    """curriculum switch: fraction of the epochs trained with 1 step before K steps"""
    curriculum_patience: int = 3
    """curriculum adaptive: epochs without a gain in fixed-batch PGD accuracy before K steps"""

    def __post_init__(self) -> None:
        check_field_types(self, "attack")
        _one_of("method", self.method, method_names())
        _one_of("norm", self.norm, list(THREAT_MODELS))
        _positive("eps", self.eps)
        if self.alpha is not None:
            _positive("alpha", self.alpha)
        if self.steps is not None:
            _at_least("steps", self.steps, 1)
        if self.bn_mode not in ("eval", "train"):
            raise ConfigError(f"bn_mode must be eval or train, got {self.bn_mode!r}")
        if self.noise_factor is not None:
            _non_negative("noise_factor", self.noise_factor)
        if self.gradalign_lambda is not None:
            _non_negative("gradalign_lambda", self.gradalign_lambda)
        _at_least("replays", self.replays, 1)
        _one_of("curriculum schedule", self.curriculum, list(CURRICULUM_SCHEDULES))
        if not isinstance(self.curriculum_switch, (int, float)) or not (
            0 < self.curriculum_switch <= 1
        ):
            raise ConfigError(f"curriculum_switch must be in (0, 1], got {self.curriculum_switch}")
        _at_least("curriculum_patience", self.curriculum_patience, 1)
        self.threat()  # validates the random start for the norm
        self._check_method_options()

    def _check_method_options(self) -> None:
        """Refuse attack options the method would ignore or silently reinterpret."""
        method = method_class(self.method)
        if not method.perturbs:
            given = [f"{k} (--{k})" for k in ("steps", "alpha") if getattr(self, k) is not None]
            if given:
                raise ConfigError(
                    f"{' and '.join(given)} given with method {self.method}, which trains on "
                    "clean images (no attack); drop it or choose an adversarial method"
                )
        elif method.fixed_steps is not None and self.steps not in (None, method.fixed_steps):
            raise ConfigError(
                f"method {self.method} takes exactly {method.fixed_steps} attack step, got "
                f"steps {self.steps}; for a {self.steps}-step attack use --method pgd"
            )

    def threat(self) -> ThreatModel:
        """The training threat model."""
        return threat_model(self.norm, self.eps, random_start=self.random_start)

    @property
    def attack_steps(self) -> int:
        """Steps of the training attack (the method's default unless ``steps`` is set)."""
        method = method_class(self.method)
        if not method.perturbs:
            return 0
        return self.steps if self.steps is not None else method.default_steps

    @property
    def attack_alpha(self) -> float:
        """Step size of the training attack (the method's default unless ``alpha`` is set)."""
        if self.alpha is not None:
            return self.alpha
        return method_class(self.method).default_step_size(self.threat(), self.attack_steps)


@dataclass
class OptimisationConfig:
    """What is trained, for how long, and with which SGD schedule."""

    model: str = "small_cnn"
    """registry name or package.module:factory"""
    epochs: int = 30
    """number of training epochs"""
    batch_size: int = 128
    """global batch size (split evenly across processes)"""
    lr: float = 0.1
    """peak learning rate (SGD)"""
    momentum: float = 0.9
    """SGD momentum, in [0, 1)"""
    weight_decay: float = 5e-4
    """SGD weight decay, >= 0"""
    schedule: str = "onecycle"
    """onecycle (linear up to lr, then down to 0; Wong et al. 2020) | step (x lr_gamma every
    lr_step_epochs, the paper's recipe) | constant"""
    lr_step_epochs: int = 50
    """epochs between learning-rate drops for the step schedule"""
    lr_gamma: float = 0.1
    """learning-rate factor at each drop, in (0, 1]"""
    warmup_fraction: float = 0.4
    """onecycle: fraction of training spent rising to the peak"""

    def __post_init__(self) -> None:
        check_field_types(self, "optimisation")
        _one_of("schedule", self.schedule, SCHEDULES)
        _positive("lr", self.lr)
        for key in ("epochs", "batch_size", "lr_step_epochs"):
            _at_least(key, getattr(self, key), 1)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        _at_least("weight_decay", self.weight_decay, 0)
        if not 0 < self.lr_gamma <= 1:
            raise ConfigError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if not 0 < self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in (0,1), got {self.warmup_fraction}")


@dataclass
class EvaluationConfig:
    """Validation during training and the catastrophic-overfitting monitor."""

    eval_every: int | str = "auto"
    """validate (clean + adversarial) every this many epochs and at the last; auto: the
    smallest interval at which validation costs at most 4 percent of the training's attack work
    (forward-backward passes per image: validation images x (eval_steps + 1) per validation
    against training images x (attack steps + 1) x replays per epoch), recorded resolved in
    config.yaml (digits: every 35 epochs, so a 30-epoch run validates at the last only;
    CIFAR-10, fast: every 3; PGD-7: every epoch)"""
    eval_steps: int = 10
    """PGD steps of the validation attack"""
    eval_limit: int | None = 1000
    """validate on N test images only, a class-stratified sample drawn from the seed (None:
    all). The default keeps validation of a CIFAR-sized run under a tenth of the epoch time
    (BENCHMARKS.md); ``fastrobust eval`` measures the whole test set afterwards"""
    overfit_check_size: int = 64
    """training images (a class-stratified sample drawn from the seed) in the fixed batch
    checked for catastrophic overfitting (0: off); attacked at every check, so kept small"""
    overfit_check_every: int | str = "auto"
    """run the overfitting check every this many epochs; auto: every epoch when the run acts on
    it (early_stop, curriculum adaptive), else the smallest interval at which it costs at most
    2 percent of the training's attack work (check images x (eval_steps + 1) passes, counted
    as for eval_every), recorded resolved in config.yaml (digits: every 13 epochs; CIFAR-10:
    every epoch)"""
    early_stop: bool = False
    """stop and restore the last good weights when catastrophic overfitting is detected
    (needs overfit_check_size > 0 and an adversarial training method)"""
    subsets: str = "stratified"
    """how the eval_limit and overfitting-check subsets are drawn: stratified (class-stratified
    samples from the seed) | legacy (the first eval_limit test images and a random training
    batch: what runs recorded before stratified subsets used, so they resume exactly)"""

    def __post_init__(self) -> None:
        check_field_types(self, "evaluation")
        _one_of("subsets", self.subsets, SUBSET_CHOICES)
        _interval("eval_every", self.eval_every)
        _interval("overfit_check_every", self.overfit_check_every)
        _at_least("eval_steps", self.eval_steps, 1)
        if self.eval_limit is not None:
            _at_least("eval_limit", self.eval_limit, 1)
        _at_least("overfit_check_size", self.overfit_check_size, 0)


@dataclass
class RuntimeConfig:
    """Where and how the run executes: seed, device, speed options, output folder."""

    seed: int = 0
    """seed of every random choice (data order, augmentation, random starts)"""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N"""
    amp: str = "none"
    """autocast dtype: none | bf16 | fp16"""
    channels_last: bool = False
    """store activations in NHWC (faster convolutions on GPUs)"""
    compile: bool = False
    """torch.compile the model"""
    sync_bn: bool = False
    """synchronise BatchNorm statistics across processes (GPUs only)"""
    out_dir: str = "runs"
    """parent folder of run folders"""
    name: str | None = None
    """run folder name (default: dataset-model-method-norm-eps-timestamp)"""
    progress: bool = True
    """show a progress bar on stderr (while the fastrobust logger shows INFO lines)"""

    def __post_init__(self) -> None:
        check_field_types(self, "runtime")
        _at_least("seed", self.seed, 0)
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.name is not None:
            check_run_name(self.name)


def check_run_name(name: str) -> None:
    """A run name is one non-empty path component, so the run folder lies directly in
    ``out_dir`` (no ``..``, no separator, no absolute path)."""
    separators = {"/", os.sep, os.altsep or "/"}
    if not isinstance(name, str) or not name.strip() or name in (".", ".."):
        raise ConfigError(f"run name {name!r} must be a non-empty folder name")
    if any(sep in name for sep in separators) or "\0" in name:
        raise ConfigError(
            f"run name {name!r} must be one folder name, without a path separator "
            "(use --out-dir for the parent folder)"
        )


#: section name -> its dataclass, in the order of ``train --help`` and of written YAML
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "attack": AttackConfig,
    "optimisation": OptimisationConfig,
    "evaluation": EvaluationConfig,
    "runtime": RuntimeConfig,
}
#: flat field name -> the section that owns it
SECTION_OF: dict[str, str] = {
    f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)
}


@dataclass(init=False)
class TrainConfig:
    """One training run. Defaults: the offline digits job (fast L2 training, eps 1.0).

    Build it from sections (``TrainConfig(attack=AttackConfig(eps=0.5))``), from flat field
    names (``TrainConfig(eps=0.5)``), or both (flat names win). ``cfg.eps`` reads and writes
    the field in its section (``cfg.attack.eps``).
    """

    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    optimisation: OptimisationConfig = field(default_factory=OptimisationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __init__(
        self,
        data: DataConfig | None = None,
        attack: AttackConfig | None = None,
        optimisation: OptimisationConfig | None = None,
        evaluation: EvaluationConfig | None = None,
        runtime: RuntimeConfig | None = None,
        **flat: Any,
    ) -> None:
        given = {
            "data": data,
            "attack": attack,
            "optimisation": optimisation,
            "evaluation": evaluation,
            "runtime": runtime,
        }
        unknown = sorted(set(flat) - set(SECTION_OF))
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        for name, cls in SECTIONS.items():
            section = given[name]
            mine = {k: v for k, v in flat.items() if SECTION_OF[k] == name}
            try:
                if section is None:
                    section = cls(**mine)
                elif mine:
                    section = dataclasses.replace(section, **mine)
            except TypeError as exc:
                raise ConfigError(f"bad config: {exc}") from None
            object.__setattr__(self, name, section)
        self._check_combinations()

    def __getattr__(self, name: str) -> Any:
        section = SECTION_OF.get(name)
        if section is None:
            raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")
        return getattr(object.__getattribute__(self, section), name)

    def __setattr__(self, name: str, value: Any) -> None:
        section = SECTION_OF.get(name)
        if section is None:
            object.__setattr__(self, name, value)
        else:
            setattr(getattr(self, section), name, value)

    def validate(self) -> None:
        """Raise :class:`ConfigError` on any invalid value (each section checks its own)."""
        for name in SECTIONS:
            getattr(self, name).__post_init__()
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Refuse settings of different sections that contradict each other."""
        every = self.evaluation.overfit_check_every
        if self.attack.method == "curriculum" and self.attack.curriculum == "adaptive":
            if every not in (AUTO, 1):
                raise ConfigError(
                    f"curriculum adaptive reads the overfitting check after every epoch; "
                    f"overfit_check_every must be 1 or auto, got {every}"
                )
        if self.evaluation.early_stop:
            if self.evaluation.overfit_check_size == 0:
                raise ConfigError(
                    "early_stop needs the catastrophic-overfitting check; "
                    "set overfit_check_size > 0 or drop early_stop"
                )
            if not method_class(self.attack.method).perturbs:
                raise ConfigError(
                    f"early_stop has no effect with method {self.attack.method} (clean "
                    "training cannot overfit to an attack); drop it"
                )

    # -- derived values ---------------------------------------------------------------
    def threat(self) -> ThreatModel:
        """The training threat model."""
        return self.attack.threat()

    @property
    def attack_steps(self) -> int:
        """Steps of the training attack (0 for standard training)."""
        return self.attack.attack_steps

    @property
    def attack_alpha(self) -> float:
        """Step size of the training attack."""
        return self.attack.attack_alpha

    # -- dict / YAML --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Sections as nested dicts plus the resolved attack parameters (config.yaml)."""
        d: dict[str, Any] = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        d["resolved"] = {"attack_steps": self.attack_steps, "attack_alpha": self.attack_alpha}
        return d

    def to_flat_dict(self) -> dict[str, Any]:
        """Every field by its flat name plus ``resolved`` (the form recorded in checkpoints)."""
        d: dict[str, Any] = {}
        for name in SECTIONS:
            d.update(dataclasses.asdict(getattr(self, name)))
        d["resolved"] = {"attack_steps": self.attack_steps, "attack_alpha": self.attack_alpha}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Read sectioned (``attack: {eps: 1}``) or flat (``eps: 1``) keys, or a mix."""
        return cls(**flatten(d))

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML file as defaults; ``overrides`` (flat names, non-None) take precedence."""
        data = read_yaml_mapping(path)
        flat = flatten(data)
        flat.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**flat)

    def write_yaml(self, path: str | Path, *, resolved: dict[str, Any] | None = None) -> None:
        """Write :meth:`to_dict` as YAML; ``resolved`` (what a run derived, e.g. the
        ``auto`` intervals) is added to its ``resolved`` section."""
        d = self.to_dict()
        d["resolved"].update(resolved or {})
        Path(path).write_text(yaml.safe_dump(d, sort_keys=False))


class _YamlLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads ``1e-3`` as a number (YAML 1.1 reads it as text
    unless written ``1.0e-3``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file; any unreadable file is a one-line ConfigError."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder, not a YAML file")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_YamlLoader) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not a text (YAML) file") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "syntax error"
        line = f"line {where.line + 1}: " if where is not None else ""
        raise ConfigError(f"config file {p} is not valid YAML ({line}{problem})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {p} must hold a mapping of keys to values, not {type(data).__name__}"
        )
    return data


def flatten(d: dict[str, Any]) -> dict[str, Any]:
    """Sectioned or flat config keys -> flat field names (``resolved`` is dropped).

    A key inside a section must belong to that section; any unknown key is a ConfigError."""
    flat: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in d.items():
        if key == "resolved":
            continue
        if key in SECTIONS and not isinstance(value, dict):
            raise ConfigError(
                f"config section {key} must be a mapping of keys to values, got {value!r}"
            )
        if key in SECTIONS:
            for inner, v in value.items():
                if SECTION_OF.get(inner) == key:
                    flat[inner] = v
                else:
                    unknown.append(f"{key}.{inner}")
        elif key in SECTION_OF:
            flat[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    return flat
