"""The paper's Table I from run folders (Goodwin et al., HPEC 2020, Table I).

:func:`read_run` reads what a training run left in its folder (``config.yaml``,
``metrics.jsonl``, ``summary.json``); :func:`table_one` turns runs into Table I: hours to the
last and to the best epoch, each relative to a baseline run; :func:`write_rows_csv` writes it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.training.methods import method_class, steps_label
from fastrobust.training.run_folder import RunFolder
from fastrobust.training.state import BestEpoch


@dataclass(frozen=True)
class RunRecord:
    """What Table I and the Figure 1 stars need from one run folder."""

    name: str
    path: str
    method: str
    attack_steps: int
    dataset: str
    model: str
    epochs_done: int
    batch_size: int
    world_size: int
    time_to_last_s: float
    time_to_best_s: float | None
    best_epoch: int | None
    best_metric: str
    """what picked the best epoch: val_adv_acc (val_clean_acc for standard training)"""
    best_value: float | None
    test_adv_acc: float | None = None
    """the final weights' PGD accuracy on the whole test set (``summary.json``; None for runs
    recorded before it, or unfinished)"""
    best_test_adv_acc: float | None = None
    """the best epoch's weights (best.pt) on the whole test set (``summary.json``)"""
    test_clean_acc: float | None = None
    best_test_clean_acc: float | None = None
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    """the run's config by flat field name (``eps``, ``batch_size``, ...)"""


def read_run(path: str | Path) -> RunRecord:
    """Read a run folder's ``config.yaml``, ``metrics.jsonl`` and (if present) ``summary.json``.

    Times come from the per-epoch ``elapsed_s`` in ``metrics.jsonl``, so an interrupted run
    counts too; the best epoch is the trainer's (:class:`~fastrobust.training.state.BestEpoch`).
    The test-set accuracies of the final and the best weights come from ``summary.json``.
    """
    folder = RunFolder(path, writer=False)
    if not folder.path.is_dir():
        raise CheckpointError(f"run folder {folder.path} does not exist")
    cfg, _ = folder.read_config()
    rows = folder.read_metrics()
    if not rows:
        raise CheckpointError(f"{folder.path} has no finished epoch yet")
    summary = folder.read_summary()
    metric = str(summary.get("best_metric", method_class(cfg.attack.method).best_metric))
    best = BestEpoch.from_history(metric, rows)
    return RunRecord(
        name=folder.path.name,
        path=str(folder.path),
        method=steps_label(cfg.attack_steps),
        attack_steps=cfg.attack_steps,
        dataset=cfg.data.dataset,
        model=cfg.optimisation.model,
        epochs_done=int(rows[-1]["epoch"]),
        batch_size=cfg.optimisation.batch_size,
        world_size=int(summary.get("world_size", 1)),
        time_to_last_s=float(rows[-1]["elapsed_s"]),
        time_to_best_s=best.elapsed_s,
        best_epoch=best.epoch,
        best_metric=metric,
        best_value=best.value,
        **{key: _optional_float(summary.get(key)) for key in TEST_SET_KEYS},
        config=cfg.to_flat_dict(),
    )


#: the test-set accuracies a finished run records in ``summary.json`` (RunRecord fields)
TEST_SET_KEYS = ("test_clean_acc", "test_adv_acc", "best_test_clean_acc", "best_test_adv_acc")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def table_one(runs: Sequence[RunRecord], baseline: int = 0) -> list[dict[str, Any]]:
    """The paper's Table I: hours to the last and to the best epoch per run, and each as a
    ratio to the same quantity of ``runs[baseline]``; with the PGD accuracy of the last and of
    the best epoch's weights on the whole test set (None where the run did not record it)."""
    if not runs:
        raise ConfigError("no runs given")
    if not 0 <= baseline < len(runs):
        raise ConfigError(f"baseline index {baseline} is not one of the {len(runs)} runs")
    base = runs[baseline]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    return [
        {
            "run": r.name,
            "method": r.method,
            "gpus": r.world_size,
            "batch_size": r.batch_size,
            "epochs": r.epochs_done,
            "best_epoch": r.best_epoch,
            "best_acc": r.best_value,
            "best_by": r.best_metric,
            "hours_to_last": r.time_to_last_s / 3600,
            "hours_to_best": None if r.time_to_best_s is None else r.time_to_best_s / 3600,
            "rel_last": ratio(r.time_to_last_s, base.time_to_last_s),
            "rel_best": ratio(r.time_to_best_s, base.time_to_best_s),
            "test_adv_acc": r.test_adv_acc,
            "best_test_adv_acc": r.best_test_adv_acc,
        }
        for r in runs
    ]


def write_rows_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
