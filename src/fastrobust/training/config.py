"""Typed training configuration: YAML in, flags override, resolved YAML written to the run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from fastrobust.attacks.threat import THREAT_MODELS, ThreatModel, threat_model
from fastrobust.errors import ConfigError

METHODS = ("standard", "fast", "pgd")
SCHEDULES = ("step", "onecycle", "constant")


@dataclass
class TrainConfig:
    """One training run. Defaults: the offline digits job (fast L2 training, eps 1.0)."""

    dataset: str = "digits"
    """dataset name: digits (bundled), cifar10, cifar100, imagefolder, restricted_imagenet"""
    data_dir: str | None = None
    """folder holding the dataset files (CIFAR python-version folder, image folder root)"""
    image_size: int | None = None
    """resize disk images to this size (imagefolder: default the first image's size;
    restricted_imagenet: 224)"""
    workers: int = 2
    """DataLoader worker processes for disk datasets"""
    model: str = "small_cnn"
    """registry name or package.module:factory"""
    method: str = "fast"
    """standard | fast (one random-start step, Goodwin et al. 2020) | pgd (K steps)"""
    norm: str = "l2"
    """threat model: l2 | linf"""
    eps: float = 1.0
    """perturbation radius in [0,1] pixel units"""
    alpha: float | None = None
    """step size; default 1.5*eps (fast L2), 1.25*eps (fast Linf), 2.5*eps/steps (pgd)"""
    steps: int | None = None
    """attack steps per batch; default 1 for fast, 7 for pgd"""
    random_start: str = "ball"
    """random start: ball (uniform in the ball, the paper), sphere, radius (L2 only), none"""
    bn_mode: str = "eval"
    """BatchNorm mode while crafting training attacks: eval (paper's code) or train"""
    epochs: int = 30
    """number of training epochs"""
    batch_size: int = 128
    """global batch size (split evenly across processes)"""
    lr: float = 0.1
    """peak learning rate (SGD)"""
    momentum: float = 0.9
    """SGD momentum"""
    weight_decay: float = 5e-4
    """SGD weight decay"""
    schedule: str = "onecycle"
    """onecycle (linear up to lr, then down to 0; Wong et al. 2020) | step (x lr_gamma every
    lr_step_epochs, the paper's recipe) | constant"""
    lr_step_epochs: int = 50
    """epochs between learning-rate drops for the step schedule"""
    lr_gamma: float = 0.1
    """learning-rate factor at each drop"""
    warmup_fraction: float = 0.4
    """onecycle: fraction of training spent rising to the peak"""
    eval_every: int = 1
    """validate (clean + adversarial) every this many epochs, and at the last epoch"""
    eval_steps: int = 10
    """PGD steps of the validation attack"""
    eval_limit: int | None = None
    """validate on the first N test images only (None: all)"""
    overfit_check_size: int = 256
    """training images in the fixed batch checked for catastrophic overfitting (0: off)"""
    early_stop: bool = False
    """stop and restore the last good weights when catastrophic overfitting is detected"""
    augment: bool = True
    """random crop (and flip where the dataset allows) during training"""
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
    """show a progress bar"""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` on any invalid value."""
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.norm not in THREAT_MODELS:
            raise ConfigError(
                f"unknown norm {self.norm!r}; choose one of {', '.join(THREAT_MODELS)}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}"
            )
        for key in ("eps", "lr"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"{key} must be > 0, got {v}")
        if self.alpha is not None and (not math.isfinite(self.alpha) or self.alpha <= 0):
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        for key in ("epochs", "batch_size", "eval_every", "eval_steps", "lr_step_epochs"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ConfigError("momentum and weight_decay must be >= 0")
        if not 0 < self.warmup_fraction < 1:
            raise ConfigError(f"warmup_fraction must be in (0,1), got {self.warmup_fraction}")
        if self.bn_mode not in ("eval", "train"):
            raise ConfigError(f"bn_mode must be eval or train, got {self.bn_mode!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp must be none, bf16 or fp16, got {self.amp!r}")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"eval_limit must be >= 1, got {self.eval_limit}")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"image_size must be >= 1, got {self.image_size}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.overfit_check_size < 0:
            raise ConfigError("overfit_check_size must be >= 0")
        self.threat()  # validates the random start for the norm

    # -- derived values ---------------------------------------------------------------
    def threat(self) -> ThreatModel:
        """The training threat model."""
        return threat_model(self.norm, self.eps, random_start=self.random_start)

    @property
    def attack_steps(self) -> int:
        """Steps of the training attack (0 for standard training)."""
        if self.method == "standard":
            return 0
        if self.steps is not None:
            return self.steps
        return 1 if self.method == "fast" else 7

    @property
    def attack_alpha(self) -> float:
        """Step size of the training attack."""
        if self.alpha is not None:
            return self.alpha
        if self.method == "fast":
            return self.threat().fast_alpha_factor * self.eps
        return 2.5 * self.eps / max(self.attack_steps, 1)

    # -- YAML ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["resolved"] = {"attack_steps": self.attack_steps, "attack_alpha": self.attack_alpha}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"resolved"})
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as exc:
            raise ConfigError(f"bad config: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a YAML file as defaults; ``overrides`` (non-None) take precedence."""
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of keys to values")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)

    def write_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def field_help() -> dict[str, str]:
    """Field name -> its docstring (used for CLI help), read from this module's source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            if isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                out[node.target.id] = nxt.value.value  # type: ignore[attr-defined]
    return out
