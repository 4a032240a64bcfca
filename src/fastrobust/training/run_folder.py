"""A run folder and the files in it: ``config.yaml``, ``metrics.jsonl``, ``summary.json``,
``subsets.json`` (the images validation and the overfitting check use), ``last.pt``
(resumable state) and ``best.pt`` (weights of the best epoch).

Only the main process (rank 0) writes; every process may read. The trainer writes through a
:class:`RunFolder`, and the Table I reader (:mod:`fastrobust.timing.runs_table`) reads
through one, so the file names and formats live here only.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import yaml

from fastrobust import distributed
from fastrobust.checkpoint import save_checkpoint
from fastrobust.data.subsets import SubsetRecord
from fastrobust.errors import CheckpointError, ConfigError, FastRobustError, RunFolderLocked
from fastrobust.outputs import (
    append_text,
    check_output_dir,
    open_no_follow,
    refuse_symlinks,
    replace_text,
    writing,
)
from fastrobust.training.config import TrainConfig

#: the lock file of a run folder (holds the pid of the process training in it)
LOCK_FILE = ".lock"
#: the files a run writes into its folder (none may be a symbolic link)
WRITTEN = (LOCK_FILE, "config.yaml", "metrics.jsonl", "summary.json", "subsets.json",
           "last.pt", "best.pt")  # fmt: skip


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reached and where it lives (``summary.json``)."""

    run_dir: Path
    epochs_done: int
    val_clean_acc: float | None = None
    val_adv_acc: float | None = None
    test_clean_acc: float | None = None
    """the final weights' clean accuracy on the whole test set (measured in the last epoch)"""
    test_adv_acc: float | None = None
    """... and their PGD accuracy (eval_steps, the validation attack)"""
    best_test_clean_acc: float | None = None
    """the best epoch's weights (best.pt) on the whole test set: clean accuracy (the final
    weights' when the best epoch is the last)"""
    best_test_adv_acc: float | None = None
    """... and PGD accuracy"""
    test_images: int | None = None
    """images in the test set these were measured on"""
    best_test_s: float | None = None
    """seconds spent measuring best.pt on the test set after the last epoch (None: not needed,
    the best epoch was the last or was validated on the whole test set)"""
    best_epoch: int | None = None
    best_metric: str = "val_adv_acc"
    """what picks the best epoch: val_adv_acc (val_clean_acc for standard training)"""
    best_value: float | None = None
    time_to_last_s: float = 0.0
    time_to_best_s: float | None = None
    interrupted: bool = False
    stop_signal: int | None = None
    """the signal that stopped the run (2: Ctrl-C, 15: SIGTERM), None if it was not stopped"""
    nothing_to_do: bool = False
    """a resume found the run already at its epochs: nothing was trained or written"""
    extensions: list[dict[str, Any]] = field(default_factory=list)
    """changes of the planned epochs on resume (``config.yaml`` keeps the original plan)"""
    collapsed_at: int | None = None
    world_size: int = 1
    """number of data-parallel processes (GPUs) the run used"""
    peak_device_memory_mb: float | None = None
    """peak GPU memory allocated by this process while it trained (MiB; None on a CPU)"""
    subsets: dict[str, Any] = field(default_factory=dict)
    """the validation and overfitting-check subsets: split, seed, n, per-class counts (the
    indices are in ``subsets.json``)"""
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_dir"] = str(self.run_dir)
        d.pop("history")
        return d


def default_run_name(cfg: TrainConfig) -> str:
    """``dataset-model-method-norm-eps<eps>-<timestamp>`` (:func:`make_run_dir` adds ``-2``,
    ``-3``, ... when a run started in the same second took it)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    model = cfg.optimisation.model.split(":")[-1]
    attack = cfg.attack
    return f"{cfg.data.dataset}-{model}-{attack.method}-{attack.norm}-eps{attack.eps:g}-{stamp}"


def make_run_dir(out_dir: Path, name: str | None, default: str) -> Path:
    """Create the run folder: ``out_dir/name`` (an existing empty folder is accepted), or
    the first free one of ``default``, ``default-2``, ... Each try is one atomic ``mkdir``,
    so two runs started at the same moment never share a folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if name is not None:
        path = out_dir / name
        path.mkdir(exist_ok=True)
        return path
    for k in range(1, 10_000):
        path = out_dir / (default if k == 1 else f"{default}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(
        f"no free run folder name like {default} in {out_dir}; give runtime.name",
        field="runtime.name",
    )


class RunLock:
    """An exclusive lock on a run folder while a process trains in it.

    ``fcntl.flock`` on the folder's ``.lock`` file, which holds the owner's pid. The kernel
    drops the lock when its process dies, so a lock file left by a killed run is taken over
    by the next one; a live owner makes :meth:`acquire` raise RunFolderLocked naming its pid.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)  # a link: refused
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderLocked(
                    f"run folder {self.path.parent} is in use by process {owner} (training in "
                    "it); wait for that run to finish or stop it first"
                ) from None
            # the previous owner may have removed the file between our open and flock
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def still_held(self) -> bool:
        """Whether our lock file is still the folder's ``.lock`` (False once the run folder, or
        the lock in it, was deleted or moved while training)."""
        if self.fd is None:
            return False
        try:
            return os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
        except OSError:
            return False

    def release(self) -> None:
        """Remove the lock file and drop the lock; a folder that became unwritable only keeps
        a stale ``.lock`` (the next run takes it over), so an error here never masks the
        error that ended the run."""
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)  # while still holding it: see acquire()
            except OSError:
                pass
            finally:
                os.close(self.fd)
                self.fd = None


class RunFolder:
    """The files of one run; ``writer`` is False on every process but rank 0."""

    def __init__(self, path: str | Path, *, writer: bool = True) -> None:
        self.path = Path(path).expanduser()
        self.writer = writer
        self._lock: RunLock | None = None

    config_yaml = property(lambda self: self.path / "config.yaml")
    metrics_jsonl = property(lambda self: self.path / "metrics.jsonl")
    summary_json = property(lambda self: self.path / "summary.json")
    last_pt = property(lambda self: self.path / "last.pt")
    best_pt = property(lambda self: self.path / "best.pt")
    subsets_json = property(lambda self: self.path / "subsets.json")

    @classmethod
    def create(
        cls,
        cfg: TrainConfig,
        world: distributed.WorldInfo,
        *,
        resolved: dict[str, Any] | None = None,
    ) -> RunFolder:
        """A new, empty, locked run folder under ``out_dir`` with the resolved ``config.yaml``
        (``resolved``: values the run derived beyond the config's own, e.g. the intervals).

        Rank 0 creates it (:func:`make_run_dir`) and every rank gets its path; if that fails
        (the named folder holds another run, or is in use), every rank stops with the same
        error (none waits for the others)."""
        problem: FastRobustError | None = None
        path = None
        if world.is_main:
            out_dir = Path(cfg.runtime.out_dir).expanduser()
            try:
                with writing("the run folder", out_dir):
                    path = make_run_dir(out_dir, cfg.runtime.name, default_run_name(cfg))
                folder = cls(path)
                folder.lock()
                if any(p.name != LOCK_FILE for p in path.iterdir()):
                    folder.unlock()
                    raise ConfigError(
                        f"run folder {path} already exists; pick another runtime.name or "
                        "resume the run",
                        field="runtime.name",
                    )
                folder.write_config(cfg, resolved=resolved)
            except FastRobustError as exc:
                problem = exc
        shared = distributed.broadcast_object((problem, path))
        problem, path = cast("tuple[FastRobustError | None, Path | None]", shared)
        if problem is not None:
            raise problem
        if world.is_main:
            return folder
        assert path is not None  # rank 0 made the folder: no problem means a path
        return cls(path, writer=False)

    def check_writable(self) -> None:
        """Raise OutputError unless the writer can write into the folder (before work starts),
        and if a file the run writes is a symbolic link (a write would leave the folder)."""
        if self.writer:
            check_output_dir(self.path, what="run folder")
            refuse_symlinks(self.path, WRITTEN)

    def lock(self) -> None:
        """Hold the folder's lock while training (writer only; RunFolderLocked if taken)."""
        if self.writer and self._lock is None:
            lock = RunLock(self.path)
            lock.acquire()
            self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def check_present(self) -> None:
        """Raise CheckpointError if the locked folder was deleted or moved while training:
        writing on would re-create a folder without its config.yaml and earlier epochs."""
        if self._lock is not None and not self._lock.still_held():
            raise CheckpointError(
                f"run folder {self.path} was deleted or moved while training; stopped "
                "(nothing more is written there)"
            )

    # -- writing (rank 0 only; a no-op elsewhere) ----------------------------------------------
    def write_config(self, cfg: TrainConfig, *, resolved: dict[str, Any] | None = None) -> None:
        """Write ``config.yaml`` (once, when the run is created: a resume never rewrites it);
        ``resolved`` joins its ``resolved`` section."""
        if self.writer:
            with writing("config.yaml", self.path):
                cfg.write_yaml(self.config_yaml, resolved=resolved)

    def save(self, checkpoint: Path, state: dict[str, Any]) -> None:
        """Write ``last.pt`` / ``best.pt`` atomically (a failed write keeps the old file)."""
        if self.writer:
            self.check_present()
            with writing(checkpoint.name, self.path):
                save_checkpoint(checkpoint, state)

    def append_metrics(self, row: dict[str, Any]) -> None:
        if self.writer:
            self.check_present()
            with writing("metrics.jsonl", self.path):
                append_text(self.metrics_jsonl, json.dumps(row) + "\n")

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` from the checkpoint's history (on resume: a stop between
        saving ``last.pt`` and appending the epoch's line loses nothing)."""
        if self.writer:
            self.check_present()
            with writing("metrics.jsonl", self.path):
                replace_text(self.metrics_jsonl, "".join(json.dumps(r) + "\n" for r in rows))

    def write_subsets(self, **subsets: SubsetRecord) -> None:
        """``subsets.json``: name -> the subset with its indices (the same on every write of
        a run, since a subset depends on the labels, n and the run's seed only)."""
        if self.writer:
            doc = {name: record.to_dict() for name, record in subsets.items()}
            with writing("subsets.json", self.path):
                replace_text(self.subsets_json, json.dumps(doc) + "\n")

    def write_summary(self, result: TrainResult) -> None:
        if self.writer:
            self.check_present()
            with writing("summary.json", self.path):
                replace_text(self.summary_json, json.dumps(result.to_dict(), indent=2))

    # -- reading --------------------------------------------------------------------------------
    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        """The run's config, and the YAML mapping it was read from."""
        try:
            raw = yaml.safe_load(self.config_yaml.read_text()) or {}
            return TrainConfig.from_recorded(raw), raw
        except FileNotFoundError:
            raise self._missing("config.yaml") from None
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(f"{self.config_yaml} is not valid YAML ({first})") from None
        except ConfigError as exc:
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

    def read_subsets(self) -> dict[str, dict[str, Any]]:
        """``subsets.json`` as a dict (empty for runs recorded before it existed)."""
        return cast(dict[str, dict[str, Any]], self._read_json(self.subsets_json))

    def read_summary(self) -> dict[str, Any]:
        """``summary.json`` as a dict (empty while the run has not finished)."""
        return self._read_json(self.summary_json)

    def _read_json(self, path: Path) -> dict[str, Any]:
        """A JSON object file of the run ({} when absent), or CheckpointError naming it."""
        if not path.is_file():
            return {}
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not readable JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise CheckpointError(f"{path} does not hold a JSON object")
        return doc

    def _missing(self, name: str) -> CheckpointError:
        return CheckpointError(f"{self.path} is not a fastrobust run folder ({name} missing)")
