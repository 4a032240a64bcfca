"""Typed settings of Figure 1 and of ``fastrobust timing`` (one class each; the command line
and the study's ``timing`` section are built from them, :mod:`fastrobust.settings`).

A setting of the timed training run left ``None`` is the first run folder's value, else the
default of that field in :class:`~fastrobust.training.config.TrainConfig` (:data:`FROM_TRAINING`;
the flags' help says which, :func:`help_texts`), else timing's own (:data:`NO_RUN_EVAL_EVERY`,
:data:`NO_RUN_GLOBAL_BATCH`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastrobust.errors import ConfigError
from fastrobust.settings import (
    at_least,
    check_settings,
    field_docs,
    non_negative,
    positive,
    setting,
)

#: without a run folder: validate every epoch, sweep GPUs at this global batch
NO_RUN_EVAL_EVERY, NO_RUN_GLOBAL_BATCH = 1, 512
#: settings of the timed run whose default without a run folder is TrainConfig's
FROM_TRAINING = ("model", "dataset", "amp", "channels_last", "norm", "eps", "epochs", "eval_steps")

#: fields of :class:`TimingSettings` that say what is measured (the rest: the estimate)
MEASUREMENT_FIELDS = (
    "model",
    "dataset",
    "data_dir",
    "device",
    "batch_sizes",
    "steps",
    "repeats",
    "warmup",
    "amp",
    "channels_last",
    "norm",
    "eps",
)


@dataclass
class TimingSettings:
    """Figure 1 on this device: attack and step cost over batch sizes, training-time bounds."""

    model: str | None = None
    """registry model name (default: the first run's, else the training default)"""
    dataset: str | None = None
    """dataset whose image shape and size to use (default: the first run's, else the training
    default)"""
    data_dir: str | None = None
    """dataset folder, only for datasets timing does not know"""
    device: str | None = None
    """auto | cpu | cuda | cuda:N (default: auto)"""
    batch_sizes: list[int] = setting(factory=lambda: [32, 64, 128, 256, 512], rule=at_least(1))
    """batch sizes to measure"""
    steps: list[int] = setting(factory=lambda: [1, 7], rule=at_least(1))
    """PGD steps to measure (the estimates add standard training and every run's steps)"""
    repeats: int = setting(5, rule=at_least(1))
    """timed calls per point"""
    warmup: int = setting(2, rule=non_negative())
    """untimed calls first"""
    amp: Literal["none", "bf16", "fp16"] | None = None
    """autocast (default: the first run's, else the training default)"""
    channels_last: bool | None = None
    """NHWC memory layout (default: the first run's, else the training default)"""
    norm: Literal["l2", "linf"] | None = None
    """threat model (default: the first run's, else the training default)"""
    eps: float | None = setting(None, rule=positive())
    """perturbation radius (default: the first run's, else the training default)"""
    epochs: int | None = setting(None, rule=at_least(1))
    """training epochs (default: the first run's, else the training default)"""
    eval_every: int | None = setting(None, rule=at_least(1))
    """validate every N epochs (default: the first run's, else the timing default)"""
    eval_steps: int | None = setting(None, rule=at_least(1))
    """validation PGD steps (default: the first run's, else the training default)"""
    train_size: int | None = setting(None, rule=at_least(1))
    """training images (default: the dataset's)"""
    val_size: int | None = setting(None, rule=non_negative())
    """validated test images (default: the first run's eval_limit, at most the dataset's)"""
    global_batch: int | None = setting(None, rule=at_least(1))
    """global batch of the GPU sweep (default: the first run's batch size, else the timing
    default)"""
    gpus: list[int] = setting(factory=lambda: [1, 2, 4, 8], rule=at_least(1))
    """GPU counts of the GPU sweep"""
    procs: int | None = setting(None, rule=at_least(1))
    """GPUs assumed in the batch-size sweep (default: the first run's, else 1)"""

    def __post_init__(self) -> None:
        check_settings(self, "timing")
        for name in ("batch_sizes", "steps", "gpus"):
            if not getattr(self, name):
                raise ConfigError(
                    f"timing.{name} must list at least one value", field=f"timing.{name}"
                )


@dataclass
class TimingCommand(TimingSettings):
    """``fastrobust timing``: Figure 1's settings, Table I's baseline and the output folder."""

    baseline: str = "0"
    """Table I baseline: a run's position in the runs (0-based), folder name or path"""
    measure: bool | None = None
    """measure on this device (default: yes without runs, no with runs)"""
    out: str = "timing"
    """output folder"""


def help_texts() -> dict[str, str]:
    """The help of the settings whose default without a run is training's or timing's own,
    with that default in it (``registry model name (default: the first run's, else
    small_cnn)``)."""
    from fastrobust.training.config import TrainConfig

    base, docs = TrainConfig(), field_docs(TimingSettings)
    texts = {
        name: docs[name].replace("the training default", str(getattr(base, name)))
        for name in FROM_TRAINING
    }
    own = {"eval_every": NO_RUN_EVAL_EVERY, "global_batch": NO_RUN_GLOBAL_BATCH}
    texts |= {name: docs[name].replace("the timing default", str(v)) for name, v in own.items()}
    return texts
