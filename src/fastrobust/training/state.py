"""What a run carries from epoch to epoch, and how it round-trips through a checkpoint.

:class:`BestEpoch` is the one definition of the best epoch (used by the trainer for
``best.pt`` and ``summary.json`` and by the Table I reader). :class:`TrainState` is the
resumable part of a run; :meth:`TrainState.to_checkpoint` and
:meth:`TrainState.from_checkpoint` are the only places that know the checkpoint's keys, so a
field added here is saved and restored by construction. The keys are those written before the
redesign, so older ``last.pt`` files still resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastrobust.errors import CheckpointError


@dataclass
class BestEpoch:
    """The best epoch so far: the *first* epoch with the highest value of ``metric``.

    ``metric`` is the training method's choice (adversarial validation accuracy; clean accuracy
    for standard training); epochs that were not validated do not count.
    """

    metric: str
    epoch: int | None = None
    value: float | None = None
    elapsed_s: float | None = None
    """wall-clock seconds from the start of training to the end of that epoch"""

    def update(self, row: dict[str, Any]) -> bool:
        """Take one epoch's metrics row; True when it is the new best."""
        value = row.get(self.metric)
        if value is None or (self.value is not None and value <= self.value):
            return False
        self.epoch, self.value = int(row["epoch"]), float(value)
        self.elapsed_s = float(row["elapsed_s"])
        return True

    @classmethod
    def from_history(cls, metric: str, rows: Iterable[dict[str, Any]]) -> BestEpoch:
        """The best epoch of a run's metrics rows (``metrics.jsonl``)."""
        best = cls(metric)
        for row in rows:
            best.update(row)
        return best


@dataclass
class TrainState:
    """The resumable state of a run (``last.pt``), beside the weights and their metadata."""

    best: BestEpoch
    epoch: int = 0
    elapsed: float = 0.0
    """training wall-clock seconds so far (continues across resumes)"""
    history: list[dict[str, Any]] = field(default_factory=list)
    """one metrics row per finished epoch"""
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] = field(default_factory=dict)
    rng_ranks: list[dict[str, torch.Tensor]] = field(default_factory=list)
    """every rank's generator states (``cpu``, and ``cuda`` of its own GPU), in rank order"""
    monitor: dict[str, Any] = field(default_factory=dict)
    """the overfitting monitor's state (:meth:`OverfittingMonitor.state_dict`)"""
    extensions: list[dict[str, Any]] = field(default_factory=list)
    """changes of the planned epochs on resume: ``{"at_epoch", "from_epochs", "to_epochs"}``"""
    method_ranks: list[dict[str, Any]] = field(default_factory=list)
    """every rank's training-method state (:meth:`TrainingMethod.state_dict`), in rank order"""

    def to_checkpoint(self) -> dict[str, Any]:
        """Checkpoint entries of this state (merged with the weights record into last.pt)."""
        return {
            "epoch": self.epoch,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "rng_ranks": self.rng_ranks,
            "elapsed": self.elapsed,
            "best_adv": -1.0 if self.best.value is None else self.best.value,
            "best_epoch": self.best.epoch,
            "time_to_best": self.best.elapsed_s,
            "history": self.history,
            "extensions": self.extensions,
            "method_ranks": self.method_ranks,
            **self.monitor,
        }

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], *, best_metric: str) -> TrainState:
        """Read a loaded ``last.pt`` (this version's or an older one) back."""
        if "optimizer" not in state:
            raise CheckpointError("it holds weights only, not a resumable training state")
        try:
            rng_ranks = state.get("rng_ranks") or [
                {
                    "cpu": state["rng_cpu"],
                    **({"cuda": state["rng_cuda"][0]} if state["rng_cuda"] else {}),
                }
            ]
            best_value = float(state["best_adv"])
            return cls(
                best=BestEpoch(
                    best_metric,
                    state["best_epoch"],
                    None if best_value < 0 else best_value,
                    state["time_to_best"],
                ),
                epoch=int(state["epoch"]),
                elapsed=float(state["elapsed"]),
                history=list(state["history"]),
                optimizer=state["optimizer"],
                scheduler=state["scheduler"],
                scaler=state["scaler"],
                rng_ranks=list(rng_ranks),
                monitor={"best_check": state["best_check"], "good_state": state["good_state"]},
                extensions=list(state.get("extensions") or []),
                method_ranks=list(state.get("method_ranks") or []),  # absent before n-fgsm & co
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint cannot be resumed (missing or bad {exc})") from None


#: keys of a resumable ``last.pt`` and the type each must have
RESUMABLE_KEYS: dict[str, type | tuple[type, ...]] = {
    "epoch": int,
    "config": dict,
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "scaler": dict,
    "history": list,
    "elapsed": (int, float),
}


def check_resumable(state: dict[str, Any], path: Path) -> None:
    """Raise CheckpointError naming ``path`` and the key unless the loaded ``last.pt``
    ``state`` has every field a resume reads, of the right type (a damaged or hand-edited
    file is one line, not a traceback from deep inside PyTorch). The random generators'
    states must have the size this PyTorch expects: ``torch.set_rng_state`` would refuse
    them only after the model and optimiser were restored."""

    def bad(key: str, why: str) -> CheckpointError:
        return CheckpointError(f"{path} cannot be resumed: key {key!r} {why}")

    for key, kind in RESUMABLE_KEYS.items():
        if key not in state:
            raise bad(key, "is missing")
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "int or float"
            raise bad(key, f"must be of type {names}, not {type(value).__name__}")
    if state["epoch"] < 0:
        raise bad("epoch", f"must be >= 0, not {state['epoch']}")
    ranks = state.get("rng_ranks")
    if ranks is None and "rng_cpu" in state:  # a last.pt written before rng_ranks
        ranks = [{"cpu": state["rng_cpu"]}]
    if not isinstance(ranks, list) or not ranks:
        raise bad("rng_ranks", "must be a non-empty list of generator states")
    size = torch.get_rng_state().numel()
    for rank, rng in enumerate(ranks):
        cpu = rng.get("cpu") if isinstance(rng, dict) else None
        if not isinstance(cpu, torch.Tensor) or cpu.dtype != torch.uint8 or cpu.numel() != size:
            raise bad(f"rng_ranks[{rank}].cpu", f"must be a uint8 tensor of {size} bytes")
    methods = state.get("method_ranks") or []
    if not isinstance(methods, list) or not all(isinstance(m, dict) for m in methods):
        raise bad("method_ranks", "must be a list of dicts (one per rank)")


def weights_record(
    model: torch.nn.Module,
    *,
    model_spec: dict[str, Any],
    classes: list[str],
    config: dict[str, Any],
    epoch: int,
    metrics: dict[str, Any] | None,
    average: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """The checkpoint entries every fastrobust checkpoint has (``best.pt`` holds only these):
    weights, how to rebuild the model, the class names, the flat config, epoch and metrics;
    with weight averaging also the averaged weights (``ema_model``), which
    :func:`fastrobust.load_model` loads by default."""
    extra = {"ema_model": average.state_dict()} if average is not None else {}
    return {
        **extra,
        "model": model.state_dict(),
        "model_spec": model_spec,
        "classes": list(classes),
        "config": config,
        "epoch": epoch,
        "metrics": metrics or {},
    }
