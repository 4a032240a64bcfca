"""The tracking settings every job shares (``train``, ``eval``, ``study``, ``bench``).

A job's settings class inherits :class:`TrackingSettings` (``RuntimeConfig``,
``EvaluationSettings``, ``StudyCommand``), so the flags (``--logger``, ``--tracking-uri``,
``--experiment``), their checks and help come from one place (:mod:`fastrobust.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastrobust.settings import setting

LoggerName = Literal["tensorboard", "mlflow", "wandb", "csv"]


@dataclass
class TrackingSettings:
    """Experiment trackers the job logs to, besides its own files (docs/trackers.md)."""

    loggers: list[LoggerName] = setting(factory=list, flag="--logger", repeat=True)
    """experiment tracker, repeatable or comma-separated: tensorboard (pip install
    'fastrobust[tensorboard]'), mlflow ('fastrobust[mlflow]'), wandb ('fastrobust[wandb]';
    offline unless WANDB_MODE=online), csv (no extra)"""
    tracking_uri: str | None = None
    """MLflow tracking store (None: sqlite:///OUT/mlflow.db, OUT the folder holding the run
    folders)"""
    experiment: str = "fastrobust"
    """MLflow experiment and W&B project the tracked runs are grouped under"""
