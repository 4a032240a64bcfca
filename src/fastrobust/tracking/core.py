"""The tracker fan-out: which backends exist, the preflight check, and :class:`Trackers`."""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fastrobust.errors import ConfigError, OutputError
from fastrobust.outputs import check_output_dir, writing
from fastrobust.tracking.common import mlflow_uri, numeric_metrics
from fastrobust.tracking.settings import TrackingSettings

log = logging.getLogger(__name__)

#: the file in a job's output folder that keeps the tracked runs' ids (for resuming)
TRACKERS_FILE = "trackers.json"


@dataclass(frozen=True)
class Backend:
    """A tracker backend: the modules it needs and the extra that installs them."""

    name: str
    modules: tuple[str, ...]
    extra: str | None


#: every logger ``--logger`` accepts, with its optional extra (csv needs none)
BACKENDS: dict[str, Backend] = {
    "tensorboard": Backend("tensorboard", ("tensorboard",), "tensorboard"),
    "mlflow": Backend("mlflow", ("mlflow", "sqlalchemy", "alembic"), "mlflow"),
    "wandb": Backend("wandb", ("wandb",), "wandb"),
    "csv": Backend("csv", (), None),
}


class Tracker(Protocol):
    """One open tracked run (see :mod:`fastrobust.tracking.backends`)."""

    name: str

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_image(self, tag: str, path: Path, step: int) -> None: ...
    def log_summary(self, summary: dict[str, Any], step: int) -> None: ...
    def state(self) -> dict[str, Any]: ...
    def close(self, status: str) -> None: ...


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_trackers(
    settings: TrackingSettings, store_dir: Path, *, section: str, probe: bool = True
) -> None:
    """Raise a one-line ConfigError/OutputError unless every logger asked for can run: its
    extra is installed, and (``probe``: on rank 0) the MLflow store can be written."""
    field = f"{section}.loggers"
    for name in dict.fromkeys(settings.loggers):
        backend = BACKENDS[name]
        missing = [m for m in backend.modules if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(
                f"{field} {name} needs the {missing[0]} package: pip install "
                f"'fastrobust[{backend.extra}]'",
                field=field,
            )
    if probe and "mlflow" in settings.loggers:
        _probe_mlflow(mlflow_uri(settings, store_dir), settings.experiment, section)


def _probe_mlflow(uri: str, experiment: str, section: str) -> None:
    """Open the store and its experiment now (what opening the run does, but the run)."""
    path = _sqlite_path(uri)
    if path is not None:
        check_output_dir(path.parent, what="the MLflow store's folder")
        if path.exists() and not path.is_file():
            raise OutputError(f"the MLflow store {path} is not a file")
        with writing("the MLflow store's folder", path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
    from fastrobust.tracking.backends import mlflow_experiment

    try:
        mlflow_experiment(uri, experiment)
    except Exception as exc:  # noqa: BLE001  any store failure is the user's to fix
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise OutputError(
            f"cannot open the MLflow store {uri} ({first})", field=f"{section}.tracking_uri"
        ) from None


def _open_one(name: str, settings: TrackingSettings, where: OpenAt) -> Tracker:
    from fastrobust.tracking import backends

    opener: Callable[..., Tracker] = {
        "tensorboard": backends.TensorBoardTracker,
        "mlflow": backends.MlflowTracker,
        "wandb": backends.WandbTracker,
        "csv": backends.CsvTracker,
    }[name]
    previous = where.previous.get(name, {})
    return opener(settings=settings, folder=where.folder, run_name=where.run_name,
                  store_dir=where.store_dir, previous=previous)  # fmt: skip


@dataclass(frozen=True)
class OpenAt:
    """Where a job's trackers open: its output folder, its name, the shared store's folder
    and the tracked runs it continues (``trackers.json``)."""

    folder: Path
    run_name: str
    store_dir: Path
    previous: dict[str, dict[str, Any]]


class Trackers:
    """The open trackers of one job (none on ranks other than 0, nor without ``loggers``).

    Every call goes to each tracker; one that raises is logged as one warning and dropped,
    so a tracker failing mid-run never stops the job nor touches its own files."""

    def __init__(self, trackers: list[Tracker], folder: Path | None = None) -> None:
        self.trackers = trackers
        self.folder = folder
        self.logged_step: int | None = None

    @classmethod
    def open(
        cls,
        settings: TrackingSettings,
        *,
        folder: Path,
        run_name: str,
        store_dir: Path,
        section: str,
        is_main: bool = True,
    ) -> Trackers:
        """Open (or, with a ``trackers.json`` in ``folder``, continue) the tracked runs."""
        if not is_main or not settings.loggers:
            return cls([])
        state_file = folder / TRACKERS_FILE
        previous = json.loads(state_file.read_text()) if state_file.is_file() else {}
        where = OpenAt(folder, run_name, store_dir, previous.get("runs", {}))
        trackers: list[Tracker] = []
        try:
            for name in dict.fromkeys(settings.loggers):
                trackers.append(_open_one(name, settings, where))
        except Exception as exc:  # noqa: BLE001  one line, the job not started
            for tracker in trackers:
                tracker.close("FAILED")
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ConfigError(
                f"{section}.loggers: could not open the {name} logger ({first})",
                field=f"{section}.loggers",
            ) from None
        out = cls(trackers, folder)
        out.logged_step = previous.get("logged_step")
        out._save_state()
        return out

    @property
    def resumed(self) -> bool:
        """Whether these trackers continue runs that already logged steps."""
        return self.logged_step is not None

    def _each(self, what: str, call: Callable[[Tracker], None]) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as exc:  # noqa: BLE001  the job's own records stay complete
                log.warning(
                    "the %s logger failed to log %s (%s: %s); it logs nothing more, the "
                    "job's own files keep every record",
                    tracker.name,
                    what,
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "",
                )
                self.trackers.remove(tracker)
                try:
                    tracker.close("FAILED")
                except Exception:  # noqa: BLE001, S110  already reported
                    pass

    def _save_state(self) -> None:
        if self.folder is None or not self.trackers:
            return
        doc = {
            "runs": {t.name: t.state() for t in self.trackers},
            "logged_step": self.logged_step,
        }
        with writing(TRACKERS_FILE, self.folder):
            (self.folder / TRACKERS_FILE).write_text(json.dumps(doc, indent=2) + "\n")

    def log_params(self, params: dict[str, Any]) -> None:
        """The resolved config (once per tracked run: not again when it is continued)."""
        if not self.resumed:
            self._each("the config", lambda t: t.log_params(params))

    def log_metrics(self, row: Mapping[str, Any], step: int) -> None:
        """The numbers of one recorded row at ``step`` (a step logged before is skipped)."""
        if not self.trackers or (self.logged_step is not None and step <= self.logged_step):
            return
        metrics = numeric_metrics(row)
        self._each(f"step {step}", lambda t: t.log_metrics(metrics, step))
        self.logged_step = step
        try:
            self._save_state()
        except OutputError as exc:
            log.warning("%s; the tracked runs may not be continued on resume", exc)

    def log_image(self, tag: str, path: Path, step: int = 0) -> None:
        self._each(f"the image {path.name}", lambda t: t.log_image(tag, path, step))

    def log_summary(self, summary: dict[str, Any]) -> None:
        """The job's final summary (numbers as ``summary/...`` at the last step logged)."""
        step = self.logged_step or 0
        self._each("the summary", lambda t: t.log_summary(summary, step))

    def close(self, status: str = "FINISHED") -> None:
        """End the tracked runs (``FINISHED``, ``KILLED`` for a stopped job, ``FAILED``)."""
        self._each("the end of the run", lambda t: t.close(status))
        self.trackers = []
