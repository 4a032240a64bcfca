"""Training: config, the per-batch adversaries (standard, fast, PGD), and the trainer that runs
``fit``/``resume``. See docs/architecture.md."""

from fastrobust.training.config import TrainConfig
from fastrobust.training.run_folder import TrainResult
from fastrobust.training.trainer import fit, resume

__all__ = ["TrainConfig", "TrainResult", "fit", "resume"]
