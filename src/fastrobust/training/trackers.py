"""A run's experiment trackers (:mod:`fastrobust.tracking`): opened with the run folder,
fed from what the trainer records (the config, each epoch's metrics row, the summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastrobust.tracking import Trackers
from fastrobust.training.config import TrainConfig


def open_run_trackers(
    cfg: TrainConfig,
    folder: Path,
    *,
    is_main: bool,
    resolved: dict[str, Any],
    history: list[dict[str, Any]],
) -> Trackers:
    """The run's trackers (rank 0; none without ``runtime.loggers``), continued when the run
    folder's ``trackers.json`` names tracked runs: the config is logged once per tracked run,
    and epochs of ``history`` not logged yet (a stop just after recording one) are caught up."""
    store = Path(cfg.runtime.out_dir).expanduser()
    trackers = Trackers.open(
        cfg.runtime,
        folder=folder,
        run_name=folder.name,
        store_dir=store,
        section="runtime",
        is_main=is_main,
    )
    config = cfg.to_dict()
    config["resolved"].update(resolved)
    trackers.log_params(config)
    for row in history:
        trackers.log_metrics(row, int(row["epoch"]))
    return trackers
