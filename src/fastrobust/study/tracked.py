"""A study sent to the experiment trackers (:mod:`fastrobust.tracking`). Each training run
logs itself (the study passes its loggers into the runs' ``runtime`` settings); the study's
own tracked run holds the study config, every model's curve (clean and robust accuracy per
eps), Table I, the seconds per step, the figures as images and the claim verdicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fastrobust.study.claims import check_claims
from fastrobust.study.config import StudyConfig
from fastrobust.study.results import StudyResults
from fastrobust.tracking import Trackers, TrackingSettings
from fastrobust.tracking.common import mlflow_uri

#: the TrainConfig keys the study passes its tracking settings into
TRACKING_KEYS = tuple(f.name for f in dataclasses.fields(TrackingSettings))


def pass_to_runs(config: StudyConfig, tracking: TrackingSettings, out: Path) -> None:
    """Make every training run of the study log to ``tracking``'s loggers, into the same
    store as the study's own tracked run (left out of the runs' cache keys)."""
    if not tracking.loggers:
        return
    store = tracking.tracking_uri or mlflow_uri(tracking, out)
    config.training.update(
        loggers=list(tracking.loggers), tracking_uri=store, experiment=tracking.experiment
    )


def _study_metrics(results: StudyResults) -> dict[str, Any]:
    row: dict[str, Any] = {"curves": {}, "step_seconds": dict(results.step_seconds)}
    for label, curve in results.curves.items():
        robust = {f"eps_{e:g}": a for e, a in zip(curve["eps"], curve["accuracy"])}
        row["curves"][label] = {"clean_acc": curve["clean_accuracy"], "robust_acc": robust}
    row["table_one"] = {str(r.get("run", i)): r for i, r in enumerate(results.table_one)}
    row["claims_hold"] = {v.claim: v.holds for v in check_claims(results) if v.holds is not None}
    return row


def track_study(results: StudyResults, tracking: TrackingSettings, out: Path) -> None:
    """Log a finished study (rank 0) to ``tracking.loggers``, as one tracked run."""
    if not tracking.loggers:
        return
    trackers = Trackers.open(
        tracking, folder=out, run_name=out.name, store_dir=out, section="study"
    )
    try:
        trackers.log_params(results.config.to_dict())
        trackers.log_metrics(_study_metrics(results), 0)
        for name, path in results.figures.items():
            if Path(path).is_file():
                trackers.log_image(name, Path(path), 0)
        verdicts = [dataclasses.asdict(v) | {"mark": v.mark} for v in check_claims(results)]
        trackers.log_summary({"claims": verdicts, "stage_times": results.stage_times})
    finally:
        trackers.close()
