"""Experiment trackers: TensorBoard, MLflow, W&B and CSV, fed from what a job records.

A job (training, evaluation, the study; the bench command too) opens its trackers with
:meth:`Trackers.open` once its output folder exists and logs the same values it writes to its
own files: the resolved config as parameters, one row of metrics per step, figures as
images, the final summary. The job's own files stay the record: a tracker that fails
mid-run logs one warning and stops, and the job goes on. Only rank 0 of a data-parallel job
logs. :func:`check_trackers` runs in the job's preflight, so a missing extra or an unwritable
store is one line before any work. ``trackers.json`` in the output folder keeps the tracked
runs' ids, so a resumed run continues the same tracked run. See docs/trackers.md.
"""

from fastrobust.tracking.common import numeric_metrics
from fastrobust.tracking.core import BACKENDS, TRACKERS_FILE, Trackers, check_trackers
from fastrobust.tracking.settings import LoggerName, TrackingSettings

__all__ = [
    "BACKENDS",
    "TRACKERS_FILE",
    "LoggerName",
    "Trackers",
    "TrackingSettings",
    "check_trackers",
    "numeric_metrics",
]
