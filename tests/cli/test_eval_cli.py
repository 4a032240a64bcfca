"""``fastrobust eval``: outputs, defaults, notes, and one-line errors with exit status 2."""

from __future__ import annotations

import json

import pytest
import torch

from fastrobust.cli import main
from fastrobust.data import DATASETS
from fastrobust.data.base import ImageDataset

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

FAST = ["--steps", "2", "--restarts", "2", "--limit", "30", "--no-progress"]


def test_two_models_table_json_csv_plot(trained_runs, tmp_path, capsys):
    out = tmp_path / "ev"
    args = ["eval", str(trained_runs["standard"]), str(trained_runs["fast"] / "best.pt")]
    rc = main(args + ["--norm", "l2", "--eps", "0,0.5,1", "--out", str(out), *FAST])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "a class-stratified sample of 30 of 360 test points (seed 0)" in stdout
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["eps"])
    assert lines[header].split() == ["eps", "standard", "fast"]
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["0", "0.5", "1"]
    assert "gradient-masking checks: standard 7/7 passed, fast 7/7 passed" in stdout
    doc = json.loads((out / "robustness.json").read_text())
    assert doc["subset"] == "a class-stratified sample of 30 of 360 test points (seed 0)" and doc[
        "eps"
    ] == [0, 0.5, 1]
    fast = doc["models"]["fast"]
    assert fast["trained"] == {
        "method": "fast",
        "norm": "l2",
        "eps": 1.0,
        "dataset": "digits",
        "weights": "raw",
    }
    assert fast["steps"] == 2 and fast["restarts"] == 2 and fast["data"]["limit"] == 30
    assert fast["accuracy"][0] >= fast["accuracy"][1] >= fast["accuracy"][2]
    csv_rows = (out / "robustness.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + 2 * 3 and all("sample of 30 of 360" in r for r in csv_rows[1:])
    assert (out / "robustness.png").stat().st_size > 1000


def test_defaults_from_the_checkpoint_and_default_folder(trained_runs, capsys):
    # norm, eps grid (0, e/4, e/2, e, 2e) and dataset come from the fast run; the output
    # goes to a new eval-<timestamp> folder next to it
    rc = main(
        [
            "eval",
            str(trained_runs["fast"]),
            "--steps",
            "1",
            "--restarts",
            "1",
            "--limit",
            "10",
            "--no-progress",
            "--no-checks",
        ]
    )
    stdout = capsys.readouterr().out
    assert rc == 0
    written = stdout.strip().splitlines()[-1].split()[1].rstrip(",")
    doc = json.loads(open(written).read())
    assert doc["eps"] == [0.0, 0.25, 0.5, 1.0, 2.0] and doc["norm"] == "l2"
    assert doc["data"]["dataset"] == "digits"
    folder = trained_runs["fast"].parent
    assert any(p.name.startswith("eval-") for p in folder.iterdir())
    assert "skipped (--no-checks)" in stdout


def test_norm_mismatch_is_allowed_but_said(trained_runs, tmp_path, capsys):
    rc = main(
        [
            "eval",
            str(trained_runs["fast"]),
            "--norm",
            "linf",
            "--eps",
            "0,0.05",
            "--out",
            str(tmp_path),
            *FAST,
        ]
    )
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "note: fast: trained against l2 eps 1, evaluated under linf" in stdout
    doc = json.loads((tmp_path / "robustness.json").read_text())
    assert doc["models"]["fast"]["notes"] == ["trained against l2 eps 1, evaluated under linf"]


def _one_line_error(capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "eps, message",
    [(",", "empty"), ("-1,0.5", ">= 0"), ("1,0.5", "increasing"), ("0,x", "not a number")],
)
def test_bad_eps_lists(trained_runs, capsys, eps, message):
    err = _one_line_error(capsys, ["eval", str(trained_runs["fast"]), f"--eps={eps}", *FAST])
    assert message in err


def test_unknown_checkpoint_and_attack(trained_runs, tmp_path, capsys):
    err = _one_line_error(capsys, ["eval", str(tmp_path / "nope"), "--eps", "0.5"])
    assert "does not exist" in err
    err = _one_line_error(capsys, ["eval", str(tmp_path), "--eps", "0.5"])
    assert "not a fastrobust run folder" in err
    err = _one_line_error(capsys, ["eval", str(trained_runs["fast"]), "--attack", "fgsm", *FAST])
    assert "unknown attack" in err


def _fake(name: str, shape: tuple[int, int, int], classes: list[str]) -> ImageDataset:
    x = torch.zeros(20, *shape, dtype=torch.uint8)
    y = torch.arange(20) % len(classes)
    return ImageDataset(name, x, y, x, y, classes, [0.5] * shape[0], [0.25] * shape[0])


def test_dataset_the_model_was_not_trained_for(trained_runs, capsys, monkeypatch):
    monkeypatch.setitem(
        DATASETS, "rgb", lambda d: _fake("rgb", (3, 8, 8), [str(i) for i in range(10)])
    )
    monkeypatch.setitem(DATASETS, "five", lambda d: _fake("five", (1, 8, 8), list("abcde")))
    err = _one_line_error(capsys, ["eval", str(trained_runs["fast"]), "--data", "rgb", *FAST])
    assert "takes 1x8x8 images" in err and "3x8x8" in err
    err = _one_line_error(capsys, ["eval", str(trained_runs["fast"]), "--data", "five", *FAST])
    assert "10 classes" in err
    err = _one_line_error(capsys, ["eval", str(trained_runs["fast"]), "--data", "nosuch", *FAST])
    assert "unknown dataset" in err
