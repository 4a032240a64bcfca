"""``fastrobust certify``: the report files, the table, and one-line errors (exit 2) before any
sampling."""

from __future__ import annotations

import csv
import json

import pytest

from fastrobust.cli import main
from fastrobust.smoothing import core as smoothing_core

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ["--sigma", "0.25", "--n0", "20", "--n", "200", "--batch-size", "200", "--limit", "8"]
CHECK = ["--check-size", "4", "--check-steps", "2", "--check-samples", "4", "--check-n", "50"]


def test_certify_writes_json_csv_plot_and_prints_the_curve(trained_runs, tmp_path, capsys):
    out = tmp_path / "cert"
    args = ["certify", str(trained_runs["standard"]), str(trained_runs["fast"] / "best.pt")]
    rc = main([*args, *SMALL, *CHECK, "--radii", "0,0.25,0.5", "--out", str(out), "-q"])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["radius"])
    assert lines[header].split() == ["radius", "standard", "fast"]
    assert "smoothed-attack check (standard, 4 points)" in stdout
    doc = json.loads((out / "certified.json").read_text())
    fast = doc["models"]["fast"]
    assert doc["settings"]["n"] == 200 and fast["radii"] == [0, 0.25, 0.5]
    assert fast["points"] == 8 and len(fast["per_point"]["radius"]) == 8
    for r, acc in zip(fast["radii"], fast["certified_accuracy"]):
        radii = fast["per_point"]["radius"]
        right = [
            p == y for p, y in zip(fast["per_point"]["prediction"], fast["per_point"]["label"])
        ]
        assert acc == sum(ok and q is not None and q >= r for ok, q in zip(right, radii)) / 8
    rows = list(csv.DictReader((out / "certified.csv").open()))
    assert len(rows) == 2 * 3 and rows[0]["model"] == "standard"
    assert (out / "certified.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--sigma", "0"], "--sigma"),
        (["--sigma", "-0.5"], "--sigma"),
        (["--n0", "300"], "--n0"),
        (["--alpha", "1"], "--alpha"),
        (["--alpha", "0"], "--alpha"),
        (["--batch-size", "201"], "--batch-size"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_any_sampling(
    trained_runs, tmp_path, capsys, monkeypatch, flags, flag
):
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled")

    monkeypatch.setattr(smoothing_core, "sample_counts", no_sampling)
    args = ["certify", str(trained_runs["fast"]), *SMALL, "--out", str(tmp_path / "c")]
    rc = main([*args, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and flag in err[0], err
    assert not (tmp_path / "c").exists()
