"""A run folder and the files in it: ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``last.pt`` (resumable state) and ``best.pt`` (weights of the best epoch).

Only the main process (rank 0) writes; every process may read. The trainer writes through a
:class:`RunFolder`, and the Table I reader (:mod:`fastrobust.timing.runs_table`) reads
through one, so the file names and formats live here only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from fastrobust import distributed
from fastrobust.checkpoint import save_checkpoint
from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.training.config import TrainConfig


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reached and where it lives (``summary.json``)."""

    run_dir: Path
    epochs_done: int
    val_clean_acc: float | None = None
    val_adv_acc: float | None = None
    best_epoch: int | None = None
    best_metric: str = "val_adv_acc"
    """what picks the best epoch: val_adv_acc (val_clean_acc for standard training)"""
    best_value: float | None = None
    time_to_last_s: float = 0.0
    time_to_best_s: float | None = None
    interrupted: bool = False
    collapsed_at: int | None = None
    world_size: int = 1
    """number of data-parallel processes (GPUs) the run used"""
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d.pop("history")
        return d


def default_run_name(cfg: TrainConfig) -> str:
    """``dataset-model-method-norm-eps<eps>-<timestamp>``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    model = cfg.optimisation.model.split(":")[-1]
    attack = cfg.attack
    return f"{cfg.data.dataset}-{model}-{attack.method}-{attack.norm}-eps{attack.eps:g}-{stamp}"


class RunFolder:
    """The files of one run; ``writer`` is False on every process but rank 0."""

    def __init__(self, path: str | Path, *, writer: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.writer = writer

    config_yaml = property(lambda self: self.path / "config.yaml")
    metrics_jsonl = property(lambda self: self.path / "metrics.jsonl")
    summary_json = property(lambda self: self.path / "summary.json")
    last_pt = property(lambda self: self.path / "last.pt")
    best_pt = property(lambda self: self.path / "best.pt")

    @classmethod
    def create(cls, cfg: TrainConfig, world: distributed.WorldInfo) -> RunFolder:
        """A new, empty run folder under ``out_dir`` with the resolved ``config.yaml``.

        Every rank gets the same name (rank 0's timestamp) and, if the folder already
        exists, every rank stops with the same ConfigError (none waits for the others)."""
        name = cfg.runtime.name or default_run_name(cfg)
        name = str(distributed.broadcast_object(name))
        folder = cls(Path(cfg.runtime.out_dir).expanduser() / name, writer=world.is_main)
        problem = None
        if folder.writer:
            if folder.path.exists() and any(folder.path.iterdir()):
                problem = (
                    f"run folder {folder.path} already exists; pick another --name or use --resume"
                )
            else:
                folder.path.mkdir(parents=True, exist_ok=True)
                folder.write_config(cfg)
        problem = distributed.broadcast_object(problem)
        if problem is not None:
            raise ConfigError(str(problem))
        return folder

    # -- writing (rank 0 only; a no-op elsewhere) ----------------------------------------------
    def write_config(self, cfg: TrainConfig) -> None:
        if self.writer:
            cfg.write_yaml(self.config_yaml)

    def save(self, checkpoint: Path, state: dict[str, Any]) -> None:
        """Write ``last.pt`` / ``best.pt`` atomically."""
        if self.writer:
            save_checkpoint(checkpoint, state)

    def append_metrics(self, row: dict[str, Any]) -> None:
        if self.writer:
            with open(self.metrics_jsonl, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` from the checkpoint's history (on resume: a stop between
        saving ``last.pt`` and appending the epoch's line loses nothing)."""
        if self.writer:
            self.metrics_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def write_summary(self, result: TrainResult) -> None:
        if self.writer:
            self.summary_json.write_text(json.dumps(result.to_dict(), indent=2))

    # -- reading --------------------------------------------------------------------------------
    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        """The run's config, and the YAML mapping it was read from."""
        try:
            raw = yaml.safe_load(self.config_yaml.read_text()) or {}
            return TrainConfig.from_dict(raw), raw
        except FileNotFoundError:
            raise self._missing("config.yaml") from None
        except (yaml.YAMLError, ConfigError) as exc:
            raise CheckpointError(
                f"{self.path} is not a readable fastrobust run folder ({exc})"
            ) from None

    def read_metrics(self) -> list[dict[str, Any]]:
        """One dict per finished epoch."""
        try:
            lines = self.metrics_jsonl.read_text().splitlines()
            return [json.loads(line) for line in lines if line.strip()]
        except FileNotFoundError:
            raise self._missing("metrics.jsonl") from None
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{self.path} is not a readable fastrobust run folder ({exc})"
            ) from None

    def read_summary(self) -> dict[str, Any]:
        """``summary.json`` as a dict (empty while the run has not finished)."""
        if not self.summary_json.is_file():
            return {}
        return json.loads(self.summary_json.read_text())

    def _missing(self, name: str) -> CheckpointError:
        return CheckpointError(f"{self.path} is not a fastrobust run folder ({name} missing)")
