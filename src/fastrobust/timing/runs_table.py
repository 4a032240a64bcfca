"""The paper's Table I from run folders (Goodwin et al., HPEC 2020, Table I).

:func:`read_run` reads what a training run left in its folder (``config.yaml``,
``metrics.jsonl``, ``summary.json``); :func:`table_one` turns runs into Table I: hours to the
last and to the best epoch, each relative to a baseline run; :func:`write_rows_csv` writes it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.timing.measure import method_label
from fastrobust.training.config import TrainConfig


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
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    """the run's config by flat field name (``eps``, ``batch_size``, ...)"""


def read_run(path: str | Path) -> RunRecord:
    """Read a run folder's ``config.yaml``, ``metrics.jsonl`` and (if present) ``summary.json``.

    Times come from the per-epoch ``elapsed_s`` in ``metrics.jsonl``, so an interrupted run
    counts too; the best epoch is the engine's: the first with the highest adversarial
    validation accuracy (clean accuracy for standard training).
    """
    run = Path(path).expanduser()
    if not run.is_dir():
        raise CheckpointError(f"run folder {run} does not exist")
    try:
        raw = yaml.safe_load((run / "config.yaml").read_text()) or {}
        cfg = TrainConfig.from_dict(raw)
        rows = [
            json.loads(line)
            for line in (run / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"{run} is not a fastrobust run folder ({Path(exc.filename).name} missing)"
        ) from None
    except (yaml.YAMLError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{run} is not a readable fastrobust run folder ({exc})") from None
    if not rows:
        raise CheckpointError(f"{run} has no finished epoch yet")
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    default_metric = "val_clean_acc" if cfg.method == "standard" else "val_adv_acc"
    metric = str(summary.get("best_metric", default_metric))
    best_epoch, best_value, best_t = None, None, None
    for r in rows:
        value = r.get(metric)
        if value is not None and (best_value is None or value > best_value):
            best_epoch, best_value, best_t = int(r["epoch"]), float(value), float(r["elapsed_s"])
    return RunRecord(
        name=run.name,
        path=str(run),
        method=method_label(cfg.attack_steps),
        attack_steps=cfg.attack_steps,
        dataset=cfg.dataset,
        model=cfg.model,
        epochs_done=int(rows[-1]["epoch"]),
        batch_size=cfg.batch_size,
        world_size=int(summary.get("world_size", 1)),
        time_to_last_s=float(rows[-1]["elapsed_s"]),
        time_to_best_s=best_t,
        best_epoch=best_epoch,
        best_metric=metric,
        best_value=best_value,
        config=cfg.to_flat_dict(),
    )


def table_one(runs: Sequence[RunRecord], baseline: int = 0) -> list[dict[str, Any]]:
    """The paper's Table I: hours to the last and to the best epoch per run, and each as a
    ratio to the same quantity of ``runs[baseline]``."""
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
