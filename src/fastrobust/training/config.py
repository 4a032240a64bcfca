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
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

import fastrobust.training.collapse_resistant  # noqa: F401  registers the methods it defines
import fastrobust.training.divergence  # noqa: F401  registers trades and mart
import fastrobust.training.methods_feature_prior  # noqa: F401  registers fgsm-fuap
import fastrobust.training.methods_prior  # noqa: F401  registers fgsm-pgi
import fastrobust.training.methods_regularised  # noqa: F401  registers nuat, gat, elle, ...
import fastrobust.training.smoothing_methods  # noqa: F401  registers gaussian and smoothadv
from fastrobust.attacks.threat import THREAT_MODELS, ThreatModel, threat_model
from fastrobust.data.disk_loader import WORKERS
from fastrobust.errors import ConfigError
from fastrobust.settings import at_least, check_settings, in_range, non_negative, positive, setting
from fastrobust.tracking.settings import TrackingSettings
from fastrobust.training.methods import method_class, method_names, option_owners

#: the format of recorded configs (config.yaml, checkpoints) this code writes; records of
#: older versions are migrated by :meth:`TrainConfig.from_recorded`
SCHEMA_VERSION = 2
#: how a run draws its validation and overfitting-check subsets: class-stratified samples
#: from the seed for every new run; "legacy" only for runs recorded before those
SUBSET_RULES = ("stratified", "legacy")
AUTO = "auto"
#: eval_every auto: validation's attack work at most this share of an epoch's training work
VALIDATION_SHARE = 0.04
#: overfit_check_every auto: the check's attack work at most this share of it (with the
#: validation at the last epoch and the checkpoints, the goal is <= 10% outside training)
CHECK_SHARE = 0.02


def _interval(name: str, value: Any) -> None:
    if value != AUTO and (isinstance(value, str) or value < 1):
        raise ConfigError(
            f"{name} must be a whole number of epochs >= 1 or auto, got {value!r}", field=name
        )


def _one_of(name: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        label = name.rsplit(".", 1)[-1]
        raise ConfigError(
            f"unknown {label} {value!r} ({name}); choose one of {', '.join(choices)}", field=name
        )


@dataclass
class DataConfig:
    """Which images to train on and how they are fed."""

    dataset: str = "digits"
    """dataset name: digits (bundled), cifar10, cifar100, imagefolder, restricted_imagenet"""
    data_dir: str | None = None
    """folder holding the dataset files (CIFAR python-version folder, image folder root); stored
    absolute, so eval and visualize find it again when no --data-dir is given"""
    image_size: int | None = setting(None, rule=at_least(1))
    """resize images to this size (imagefolder: default the first image's size;
    restricted_imagenet: 224; digits: upsampled from 8, bilinear)"""
    workers: int = setting(WORKERS, rule=at_least(0))
    """DataLoader worker processes for disk datasets (training batches, and the images of
    validation and of the test-set numbers)"""
    augment: bool = True
    """augment training images: a random crop (pad-crop below 64 px, the random-resized crop of
    ImageNet recipes for disk images of 64 px and more) and flips if on; off: neither"""
    flip: bool | None = None
    """random horizontal flips (default: the dataset's: on for photos, cifar10/100 and
    restricted_imagenet; off for digits and imagefolder, whose images may be digits or text
    that a mirror makes wrong)"""
    crop_padding: int | None = setting(None, rule=at_least(0))
    """zero padding of the pad-crop in pixels, 0: no crop (default: the dataset's: digits 1,
    cifar 4, disk images below 64 px size // 8; 64 px and more use the random-resized crop)"""
    color_jitter: float = setting(0.0, rule=in_range(0, 1, high_open=True))
    """disk images of 64 px and more: brightness/contrast/saturation jitter strength (MadryLab
    robustness uses 0.1 for Restricted ImageNet; 0: off)"""
    lighting: float = setting(0.0, rule=non_negative())
    """disk images of 64 px and more: std of AlexNet's PCA lighting noise (robustness: 0.05)"""

    def __post_init__(self) -> None:
        check_settings(self, "data")
        if self.data_dir:  # absolute, so a checkpoint's recorded folder works from anywhere
            self.data_dir = str(Path(self.data_dir).expanduser().resolve())


@dataclass(init=False)
class AttackConfig:
    """The training method, the threat model its attack works in, and the method's options.

    The method's own options (``noise_factor``, ``replays``, ...) are declared by the method
    (its ``Options`` settings class, :mod:`fastrobust.training.methods`) and held in
    ``options``; they are given as keys of this section (``AttackConfig(method="free",
    replays=2)``, ``attack: {replays: 2}``) and read as attributes (``attack.replays``). An
    option of a method that is not selected is refused."""

    method: str = "fast"
    """training method (fastrobust.training.methods): standard | fast (one random-start step,
    Goodwin et al. 2020) | pgd (K steps) | n-fgsm (large noise, one step, de Jorge et al.
    2022) | gradalign (fast + gradient alignment, Andriushchenko & Flammarion 2020) | free
    (replayed batches, Shafahi et al. 2019) | curriculum (fast growing to K-step PGD) | trades
    (KL attack and update, Zhang et al. 2019) | mart (misclassification-aware, Wang et al.
    2020)"""
    norm: str = "l2"
    """threat model: l2 | linf"""
    eps: float = setting(1.0, rule=positive())
    """perturbation radius in [0,1] pixel units (also the validation attack's); must leave
    part of the [0,1] box out of reach: below 1 for linf, below sqrt(C*H*W) for l2 (checked
    once the data is loaded)"""
    alpha: float | None = setting(None, rule=positive())
    """step size; default 1.5*eps (fast, gradalign: L2), 1.25*eps (fast, gradalign: Linf),
    2.5*eps/steps (pgd, curriculum's multi-step epochs), eps (n-fgsm, free); refused with
    standard training (no attack)"""
    steps: int | None = setting(None, rule=at_least(1))
    """attack steps per batch; default 1 for fast, 7 for pgd (curriculum: the final K, 7);
    refused with standard training, and fast, n-fgsm, gradalign and free are one step by
    definition (for more, use pgd)"""
    random_start: str = "ball"
    """random start: ball (uniform in the ball, the paper), sphere, radius (L2 only), none"""
    bn_mode: Literal["eval", "train"] = "eval"
    """BatchNorm mode while crafting training attacks: eval (paper's code) or train"""
    options: Any = None
    """the method's options: an instance of its ``Options`` class (None: its defaults)"""

    def __init__(self, **values: Any) -> None:
        for f in dataclasses.fields(self):
            if f.name in values:
                object.__setattr__(self, f.name, values.pop(f.name))
            else:
                object.__setattr__(self, f.name, f.default)
        self.options = _method_options(self.method, self.options, values)
        self.__post_init__()

    def __post_init__(self) -> None:
        check_settings(self, "attack")
        _one_of("attack.method", self.method, method_names())
        _one_of("attack.norm", self.norm, list(THREAT_MODELS))
        self.options = _method_options(self.method, self.options, {})
        self.threat()  # validates the random start for the norm
        self._check_method_options()

    def __getattr__(self, name: str) -> Any:
        options = self.__dict__.get("options")
        if options is not None and name in _field_names(options):
            return getattr(options, name)
        raise AttributeError(
            f"{type(self).__name__} of method {self.__dict__.get('method')} has no attribute "
            f"{name!r}"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        options = self.__dict__.get("options")
        if options is not None and name in _field_names(options):
            setattr(options, name, value)
        else:
            object.__setattr__(self, name, value)

    def option_values(self) -> dict[str, Any]:
        """The method's options by name (what the config records)."""
        return dataclasses.asdict(self.options)

    def _check_method_options(self) -> None:
        """Refuse attack options the method would ignore or silently reinterpret."""
        method = method_class(self.method)
        if method.norms is not None and self.norm not in method.norms:
            raise ConfigError(
                f"method {self.method} has no {self.norm} form ({method.norms_reason}); "
                f"use attack.norm {' or '.join(method.norms)}",
                field="attack.norm",
            )
        if not method.perturbs:
            given = [f"attack.{k}" for k in ("steps", "alpha") if getattr(self, k) is not None]
            if given:
                raise ConfigError(
                    f"{' and '.join(given)} given with method {self.method}, which trains on "
                    "clean images (no attack); drop it or choose an adversarial method",
                    field=given[0],
                )
        elif method.fixed_steps is not None and self.steps not in (None, method.fixed_steps):
            raise ConfigError(
                f"method {self.method} takes exactly {method.fixed_steps} attack step, got "
                f"attack.steps {self.steps}; for a {self.steps}-step attack use attack.method pgd",
                field="attack.steps",
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


def _field_names(options: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(options)}


def _method_options(method: str, options: Any, given: dict[str, Any]) -> Any:
    """The ``Options`` instance of ``method`` from ``options`` (None, a mapping, or an
    instance, possibly another method's) updated by the option values ``given``; an option
    the method does not have is a ConfigError naming the methods that have it."""
    if method not in method_names():
        return options  # __post_init__ names the unknown method
    cls = method_class(method).Options
    values: dict[str, Any] = {}
    if isinstance(options, dict):
        values.update(options)
    elif options is not None and not isinstance(options, cls):
        defaults = dataclasses.asdict(type(options)())
        values.update({k: v for k, v in dataclasses.asdict(options).items() if v != defaults[k]})
    elif options is not None:
        values.update(dataclasses.asdict(cast(Any, options)))
    values.update(given)
    mine = {f.name for f in dataclasses.fields(cls)}
    for name in values:
        if name not in mine:
            owners = option_owners().get(name)
            if owners is None:
                raise ConfigError(f"unknown config key attack.{name}")
            raise ConfigError(
                f"attack.{name} is an option of method {' and '.join(owners)}, not of "
                f"{method}; drop it or set attack.method {owners[0]}",
                field=f"attack.{name}",
            )
    return cls(**values)


@dataclass
class OptimisationConfig:
    """What is trained, for how long, and with which SGD schedule."""

    model: str = "small_cnn"
    """registry name or package.module:factory"""
    epochs: int = setting(30, rule=at_least(1))
    """number of training epochs"""
    batch_size: int = setting(128, rule=at_least(1))
    """global batch size (split evenly across processes)"""
    lr: float = setting(0.1, rule=positive())
    """peak learning rate (SGD)"""
    momentum: float = setting(0.9, rule=in_range(0, 1, high_open=True))
    """SGD momentum, in [0, 1)"""
    weight_decay: float = setting(5e-4, rule=non_negative())
    """SGD weight decay, >= 0"""
    schedule: Literal["step", "onecycle", "constant"] = "onecycle"
    """onecycle (linear up to lr, then down to 0; Wong et al. 2020) | step (x lr_gamma every
    lr_step_epochs, the paper's recipe) | constant"""
    lr_step_epochs: int = setting(50, rule=at_least(1))
    """epochs between learning-rate drops for the step schedule"""
    lr_gamma: float = setting(0.1, rule=in_range(0, 1, low_open=True))
    """learning-rate factor at each drop, in (0, 1]"""
    warmup_fraction: float = setting(0.4, rule=in_range(0, 1, low_open=True, high_open=True))
    """onecycle: fraction of training spent rising to the peak"""
    weight_average: float = setting(0.0, rule=in_range(0, 1, high_open=True))
    """decay tau of an exponential moving average of the weights, updated after every weight
    update (0: off; the FastAT Benchmark uses 0.9995); validation, best.pt and eval use the
    average when it is on (training.averaging)"""
    label_smoothing: float = setting(0.0, rule=in_range(0, 1, high_open=True))
    """label smoothing of the cross-entropy of the weight update, every method (attacks keep
    their own loss; 0: off)"""

    def __post_init__(self) -> None:
        check_settings(self, "optimisation")


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
    eval_steps: int = setting(10, rule=at_least(1))
    """PGD steps of the validation attack"""
    eval_limit: int | None = setting(1000, rule=at_least(1))
    """validate on N test images only, a class-stratified sample drawn from the seed (None:
    all). The default keeps validation of a CIFAR-sized run under a tenth of the epoch time
    (BENCHMARKS.md); ``fastrobust eval`` measures the whole test set afterwards"""
    overfit_check_size: int = setting(64, rule=at_least(0))
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

    def __post_init__(self) -> None:
        check_settings(self, "evaluation")
        _interval("evaluation.eval_every", self.eval_every)
        _interval("evaluation.overfit_check_every", self.overfit_check_every)


@dataclass
class RuntimeConfig(TrackingSettings):
    """Where and how the run executes: seed, device, speed options, output folder, the
    experiment trackers it also logs to."""

    seed: int = setting(0, rule=at_least(0))
    """seed of every random choice (data order, augmentation, random starts)"""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N"""
    amp: Literal["none", "bf16", "fp16"] = "none"
    """autocast dtype: none | bf16 | fp16"""
    channels_last: bool = False
    """store activations in NHWC (faster convolutions on GPUs)"""
    compile: bool = False
    """torch.compile the model, with static shapes (a partial last batch compiles its own
    graph once instead of turning every batch's graph dynamic)"""
    cudnn_benchmark: bool = True
    """let cuDNN time its convolution kernels for training's fixed batch shape and keep the
    fastest (CUDA only; off with deterministic; evaluation never autotunes)"""
    deterministic: bool = False
    """deterministic kernels only (torch.use_deterministic_algorithms, no cuDNN autotuning):
    on a GPU a resumed run then equals an uninterrupted one bitwise, at some speed cost"""
    sync_bn: bool = False
    """synchronise BatchNorm statistics across processes (GPUs only)"""
    out_dir: str = "runs"
    """parent folder of run folders"""
    name: str | None = None
    """run folder name (default: dataset-model-method-norm-eps-timestamp)"""
    progress: bool = True
    """show a progress bar on stderr (while the fastrobust logger shows INFO lines)"""

    def __post_init__(self) -> None:
        check_settings(self, "runtime")
        if self.name is not None:
            check_run_name(self.name)


def check_run_name(name: str) -> None:
    """A run name is one non-empty path component, so the run folder lies directly in
    ``out_dir`` (no ``..``, no separator, no absolute path)."""
    separators = {"/", os.sep, os.altsep or "/"}
    if not isinstance(name, str) or not name.strip() or name in (".", ".."):
        raise ConfigError(
            f"runtime.name {name!r} must be a non-empty folder name", field="runtime.name"
        )
    if any(sep in name for sep in separators) or "\0" in name:
        raise ConfigError(
            f"runtime.name {name!r} must be one folder name, without a path separator "
            "(runtime.out_dir is the parent folder)",
            field="runtime.name",
        )


#: section name -> its dataclass, in the order of ``train --help`` and of written YAML
SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "attack": AttackConfig,
    "optimisation": OptimisationConfig,
    "evaluation": EvaluationConfig,
    "runtime": RuntimeConfig,
}


class _SectionOf(Mapping[str, str]):
    """Flat key -> the section that owns it: every section's fields (but ``attack.options``)
    and the options of every registered training method (``attack``), read at each use so
    that a method registered later is known."""

    def _table(self) -> dict[str, str]:
        table = {
            f.name: section
            for section, cls in SECTIONS.items()
            for f in dataclasses.fields(cls)
            if (section, f.name) != ("attack", "options")
        }
        for name in option_owners():
            if name in table:
                raise TypeError(f"method option {name} is also a field of section {table[name]}")
            table[name] = "attack"
        return table

    def __getitem__(self, key: str) -> str:
        return self._table()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: flat key -> the section that owns it
SECTION_OF: Mapping[str, str] = _SectionOf()


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
        _refuse_subsets(flat.pop("subsets", "stratified"))
        owner = dict(SECTION_OF)
        unknown = sorted(set(flat) - set(owner))
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        #: how the run draws its subsets (:data:`SUBSET_RULES`; only a record says legacy)
        object.__setattr__(self, "subsets", "stratified")
        for name, cls in SECTIONS.items():
            section = given[name]
            mine = {k: v for k, v in flat.items() if owner[k] == name}
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
        section = SECTION_OF.get(name) if not name.startswith("__") else None
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
        method = method_class(self.attack.method)
        if method.needs_overfitting_check_every_epoch(self.attack.options):
            if every not in (AUTO, 1):
                given = ", ".join(f"{k} {v}" for k, v in self.attack.option_values().items())
                raise ConfigError(
                    f"method {method.name} as configured ({given}) reads the overfitting "
                    "check after every epoch; "
                    f"evaluation.overfit_check_every must be 1 or auto, got {every}",
                    field="evaluation.overfit_check_every",
                )
        if self.evaluation.early_stop:
            if self.evaluation.overfit_check_size == 0:
                raise ConfigError(
                    "evaluation.early_stop needs the catastrophic-overfitting check; "
                    "set evaluation.overfit_check_size > 0 or drop evaluation.early_stop",
                    field="evaluation.early_stop",
                )
            if not method.perturbs:
                raise ConfigError(
                    f"evaluation.early_stop has no effect with method {method.name} (clean "
                    "training cannot overfit to an attack); drop it",
                    field="evaluation.early_stop",
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
    def _section_dict(self, name: str) -> dict[str, Any]:
        """One section as a dict; the attack section with its method's options by name and
        the evaluation section with the run's subset rule."""
        section = getattr(self, name)
        d = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}
        if name == "attack":
            d.pop("options")
            d.update(self.attack.option_values())
        if name == "evaluation":
            d["subsets"] = self.subsets
        return _plain(d)

    def to_dict(self) -> dict[str, Any]:
        """The record of config.yaml: the schema version, the sections as nested dicts and the
        resolved attack parameters."""
        d: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        d.update({name: self._section_dict(name) for name in SECTIONS})
        d["resolved"] = {"attack_steps": self.attack_steps, "attack_alpha": self.attack_alpha}
        return d

    def to_flat_dict(self) -> dict[str, Any]:
        """Every key by its flat name plus ``resolved`` (the record in checkpoints)."""
        d: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for name in SECTIONS:
            d.update(self._section_dict(name))
        d["resolved"] = {"attack_steps": self.attack_steps, "attack_alpha": self.attack_alpha}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Read sectioned (``attack: {eps: 1}``) or flat (``eps: 1``) keys, or a mix."""
        return cls(**flatten(d))

    @classmethod
    def from_recorded(cls, d: dict[str, Any]) -> TrainConfig:
        """The config a run recorded (config.yaml or a checkpoint's ``config``, sectioned or
        flat), of any schema version, as the run used it: records of version 1 (no
        ``schema_version``) are migrated (:func:`migrate_recorded`)."""
        flat = migrate_recorded(d)
        subsets = flat.pop("subsets", "stratified")
        if subsets not in SUBSET_RULES:
            raise ConfigError(
                f"recorded evaluation.subsets {subsets!r} is none of {', '.join(SUBSET_RULES)}",
                field="evaluation.subsets",
            )
        cfg = cls(**flat)
        object.__setattr__(cfg, "subsets", subsets)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML file as defaults; ``overrides`` (flat names, non-None) take precedence.
        A run's config.yaml may serve as the file: the options it recorded for methods it
        did not use are dropped."""
        data = read_yaml_mapping(path)
        flat = flatten(data)
        if "resolved" in data or "schema_version" in data:
            flat = _drop_other_methods_options(flat)
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


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with lists copied (a record must not share lists with the live config)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in d.items()}


def _refuse_subsets(value: Any) -> None:
    """``subsets`` is no setting: every new run draws class-stratified subsets."""
    if value != "stratified":
        raise ConfigError(
            f"evaluation.subsets {value!r} cannot be chosen: new runs always draw "
            "class-stratified subsets; legacy subsets are only kept for resuming runs "
            "recorded before them",
            field="evaluation.subsets",
        )


def _drop_other_methods_options(flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` without the options of methods other than its ``method`` (version 1 records
    held every method's options)."""
    method = flat.get("method", AttackConfig.method)
    owners = option_owners()
    return {k: v for k, v in flat.items() if k not in owners or method in owners[k]}


def migrate_recorded(d: dict[str, Any]) -> dict[str, Any]:
    """The flat keys of a recorded config (any schema version) in the current version.

    Version 1 (no ``schema_version``): every method's options were recorded (the unused
    ones are dropped); a run recorded before subsets were class-stratified drew ``legacy``
    subsets, one recorded before the check had an interval checked every epoch, and an
    imagefolder run recorded before ``flip`` existed always flipped."""
    version = d.get("schema_version", 1)
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise ConfigError(
            f"recorded config has schema_version {version!r}; this fastrobust reads "
            f"versions 1 to {SCHEMA_VERSION} (a newer fastrobust wrote it)"
        )
    flat = flatten(d)
    if version == 1:
        flat = _drop_other_methods_options(flat)
        flat.setdefault("subsets", "legacy")
        flat.setdefault("overfit_check_every", 1)
        if "flip" not in flat and flat.get("dataset") == "imagefolder":
            flat["flip"] = True
    return flat


#: keys a record holds that are not settings, by the section they are recorded in
RECORD_ONLY = {"subsets": "evaluation"}


def flatten(d: dict[str, Any]) -> dict[str, Any]:
    """Sectioned or flat config keys -> flat field names (``resolved`` and
    ``schema_version`` are dropped).

    A key inside a section must belong to that section; any unknown key is a ConfigError."""
    flat: dict[str, Any] = {}
    unknown: list[str] = []
    owner = {**RECORD_ONLY, **SECTION_OF}
    for key, value in d.items():
        if key in ("resolved", "schema_version"):
            continue
        if key in SECTIONS and not isinstance(value, dict):
            raise ConfigError(
                f"config section {key} must be a mapping of keys to values, got {value!r}"
            )
        if key in SECTIONS:
            for inner, v in value.items():
                if owner.get(inner) == key:
                    flat[inner] = v
                else:
                    unknown.append(f"{key}.{inner}")
        elif key in owner:
            flat[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    return flat
