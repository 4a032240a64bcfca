"""What the tracking modules share: the metric values a tracker takes, the default store."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastrobust.tracking.settings import TrackingSettings


def mlflow_uri(settings: TrackingSettings, store_dir: Path) -> str:
    """The MLflow tracking store: the setting, else ``sqlite:///store_dir/mlflow.db``."""
    if settings.tracking_uri:
        return settings.tracking_uri
    return f"sqlite:///{(store_dir / 'mlflow.db').resolve()}"


_BAD_KEY = re.compile(r"[^\w.\-/ ]")


def numeric_metrics(row: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of ``row`` (nested dicts joined with ``/``; booleans as 0/1; text and
    missing values left out): what a tracker can plot. Keys keep only characters every
    backend accepts."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = _BAD_KEY.sub("_", f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.update(numeric_metrics(value, f"{name}/"))
        elif isinstance(value, bool | int | float) and math.isfinite(float(value)):
            out[name] = float(value)
    return out
