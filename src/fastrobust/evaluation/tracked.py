"""An evaluation's numbers sent to the experiment trackers (:mod:`fastrobust.tracking`):
the settings as parameters; per model, the clean accuracy, the robust accuracy at each eps,
what each attack fooled there and each gradient-masking check's verdict (1 passed, 0 failed);
the plot as an image and the report's summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastrobust.evaluation.results import RobustnessCurve
from fastrobust.evaluation.settings import SECTION, EvaluationSettings
from fastrobust.tracking import Trackers


def curve_metrics(label: str, curve: RobustnessCurve) -> dict[str, Any]:
    """The numbers of one model's curve, by tracker key (``LABEL/robust_acc/eps_0.5``)."""
    row: dict[str, Any] = {"clean_acc": curve.clean_accuracy, "n": curve.n}
    row["robust_acc"] = {f"eps_{e:g}": a for e, a in zip(curve.eps, curve.accuracy)}
    row["fooled_by"] = {f"eps_{e:g}": dict(counts) for e, counts in zip(curve.eps, curve.fooled_by)}
    row["check"] = {c.name: c.passed for c in curve.checks}
    return {label: row}


def track_evaluation(
    out: Path,
    curves: dict[str, RobustnessCurve],
    settings: EvaluationSettings,
    written: dict[str, Path],
) -> None:
    """Log a finished evaluation (rank 0, its report written) to ``settings.loggers``."""
    if not settings.loggers:
        return
    trackers = Trackers.open(
        settings, folder=out, run_name=out.name, store_dir=out.parent, section=SECTION
    )
    try:
        trackers.log_params(settings.to_dict())
        row: dict[str, Any] = {}
        for label, curve in curves.items():
            row.update(curve_metrics(label, curve))
        trackers.log_metrics(row, 0)
        if "png" in written:
            trackers.log_image("robustness", written["png"], 0)
        trackers.log_summary({label: c.to_dict() for label, c in curves.items()})
    finally:
        trackers.close()
