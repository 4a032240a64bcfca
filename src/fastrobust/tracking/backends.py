"""The four tracker backends; each imports its library only when opened (optional extras).

- :class:`TensorBoardTracker`: event files in ``FOLDER/tensorboard`` written with PyTorch's
  ``SummaryWriter``; scalars as float64 tensors, so the values read back are the recorded ones.
- :class:`MlflowTracker`: a run in an MLflow tracking store (a local SQLite file by default),
  through ``MlflowClient`` (no global active run, so several jobs in one process do not mix).
- :class:`WandbTracker`: a W&B run in ``FOLDER/wandb``, offline unless ``WANDB_MODE`` says
  otherwise (``wandb sync`` uploads it later).
- :class:`CsvTracker`: ``FOLDER/csv/metrics.csv`` (one row per step, a column per metric),
  ``hparams.yaml`` and ``summary.json``; no extra needed.
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from fastrobust.tracking.common import mlflow_uri, numeric_metrics
from fastrobust.tracking.settings import TrackingSettings


def _flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``section.key``: text values (what parameter tables hold)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return out


class TensorBoardTracker:
    """Event files under ``folder/tensorboard`` (``tensorboard --logdir OUT`` shows every run)."""

    name = "tensorboard"

    def __init__(self, *, settings: TrackingSettings, folder: Path, **_: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"), flush_secs=30)

    def log_params(self, params: dict[str, Any]) -> None:
        text = yaml.safe_dump(params, sort_keys=False)
        self.writer.add_text("config", "```\n" + text + "```", 0)
        self.writer.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step, new_style=True, double_precision=True)
        self.writer.flush()

    def log_image(self, tag: str, path: Path, step: int) -> None:
        from matplotlib.image import imread

        self.writer.add_image(tag, imread(str(path))[..., :3], step, dataformats="HWC")
        self.writer.flush()

    def log_summary(self, summary: dict[str, Any], step: int) -> None:
        # at the last step: an earlier one would read as a restart and hide later steps
        self.writer.add_text("summary", "```\n" + json.dumps(summary, indent=2) + "\n```", step)
        for key, value in numeric_metrics(summary, "summary/").items():
            self.writer.add_scalar(key, value, step, new_style=True, double_precision=True)
        self.writer.flush()

    def state(self) -> dict[str, Any]:
        return {"log_dir": self.writer.log_dir}

    def close(self, status: str) -> None:
        self.writer.close()


def mlflow_experiment(uri: str, experiment: str) -> str:
    """The id of ``experiment`` in the store at ``uri`` (created, with its artifacts next to
    a SQLite store rather than in the working folder, when it does not exist)."""
    from mlflow.tracking import MlflowClient

    for noisy in ("mlflow.store.db.utils", "alembic"):  # "creating tables" lines at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    artifacts = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        artifacts = (db.parent / "mlflow-artifacts").resolve().as_uri()
    return str(client.create_experiment(experiment, artifact_location=artifacts))


class MlflowTracker:
    """A run in an MLflow store; continued (same run id) when ``previous`` names one."""

    name = "mlflow"

    def __init__(
        self,
        *,
        settings: TrackingSettings,
        folder: Path,
        run_name: str,
        store_dir: Path,
        previous: dict[str, Any],
    ) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = previous.get("tracking_uri") or mlflow_uri(settings, store_dir)
        self.client = MlflowClient(tracking_uri=self.uri)
        if previous.get("run_id"):
            self.run_id = str(previous["run_id"])
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = mlflow_experiment(self.uri, settings.experiment)
            tags = {"fastrobust.folder": str(folder.resolve())}
            run = self.client.create_run(experiment, run_name=run_name, tags=tags)
            self.run_id = run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, v[:6000]) for k, v in _flat_params(params).items()]
        for start in range(0, len(flat), 100):
            self.client.log_batch(self.run_id, params=flat[start : start + 100])
        self.client.log_dict(self.run_id, params, "config.json")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        rows = [Metric(k, v, now, step) for k, v in metrics.items()]
        for start in range(0, len(rows), 1000):
            self.client.log_batch(self.run_id, metrics=rows[start : start + 1000])

    def log_image(self, tag: str, path: Path, step: int) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path="figures")

    def log_summary(self, summary: dict[str, Any], step: int) -> None:
        self.log_metrics(numeric_metrics(summary, "summary/"), step)
        self.client.log_dict(self.run_id, summary, "summary.json")

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.uri}

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class WandbTracker:
    """A W&B run in ``folder/wandb`` (offline unless ``WANDB_MODE`` is set), continued with
    the same id on resume."""

    name = "wandb"

    def __init__(
        self, *, settings: TrackingSettings, folder: Path, run_name: str, previous: dict[str, Any],
        **_: Any,
    ) -> None:  # fmt: skip
        wandb: Any = importlib.import_module("wandb")  # untyped: used as Any

        self.wandb = wandb
        self.id = str(previous.get("id") or uuid.uuid4().hex[:12])
        (folder / "wandb").mkdir(exist_ok=True)
        self.run = wandb.init(
            project=settings.experiment,
            name=run_name,
            id=self.id,
            resume="allow",
            dir=str(folder),
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit="create_new",
        )

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_image(self, tag: str, path: Path, step: int) -> None:
        self.run.log({tag: self.wandb.Image(str(path))})

    def log_summary(self, summary: dict[str, Any], step: int) -> None:
        self.run.summary.update(numeric_metrics(summary))

    def state(self) -> dict[str, Any]:
        return {"id": self.id}

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


class CsvTracker:
    """``folder/csv``: ``metrics.csv`` in long form (``step,metric,value``, one line per
    number, appended as they come, so a resumed run continues the file and a metric that
    appears later, such as a validation accuracy, needs no new header), ``hparams.yaml``,
    ``summary.json``."""

    name = "csv"

    def __init__(self, *, folder: Path, **_: Any) -> None:
        self.dir = folder / "csv"
        self.dir.mkdir(exist_ok=True)
        self.path = self.dir / "metrics.csv"
        if not self.path.is_file():
            self.path.write_text("step,metric,value\n")

    def log_params(self, params: dict[str, Any]) -> None:
        (self.dir / "hparams.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        with open(self.path, "a", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerows([step, key, repr(value)] for key, value in metrics.items())

    def log_image(self, tag: str, path: Path, step: int) -> None:
        return  # the figure is in the job's own folder already

    def log_summary(self, summary: dict[str, Any], step: int) -> None:
        (self.dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def state(self) -> dict[str, Any]:
        return {"dir": str(self.dir)}

    def close(self, status: str) -> None:
        return
