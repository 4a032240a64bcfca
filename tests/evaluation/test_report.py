"""Reports: robustness.json / .csv / .png and the text table."""

from __future__ import annotations

import json

import pytest

from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.report import format_table, write_report

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def test_report_files(mlp, digits, tmp_path):
    curves = {
        "mlp": robustness_curve(
            mlp, digits, "l2", [0, 0.5], CurveSettings(steps=2, restarts=1, limit=40, check_size=8)
        ),
    }
    paths = write_report(tmp_path, curves, extra={"note": "x"})
    doc = json.loads(paths["json"].read_text())
    assert doc["subset"] == "a class-stratified sample of 40 of 360 test points (seed 0)"
    assert doc["models"]["mlp"]["data"]["limit"] == 40
    assert doc["models"]["mlp"]["accuracy"] == curves["mlp"].accuracy
    assert len(doc["models"]["mlp"]["checks"]) == 7
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 3 and all("sample of 40 of 360" in r for r in rows[1:])
    import matplotlib.image

    assert matplotlib.image.imread(paths["png"]).shape[0] > 100
    table = format_table(curves)
    assert table.splitlines()[0].split() == ["eps", "mlp"] and len(table.splitlines()) == 3
