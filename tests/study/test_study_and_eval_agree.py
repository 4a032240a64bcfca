"""The study's curves stage and ``fastrobust eval`` run one workflow: with the same settings
they write the same report files (JSON apart from times and paths, CSV byte for byte)."""

from __future__ import annotations

import json

import pytest

from fastrobust.cli import main
from fastrobust.study.config import StudyConfig
from fastrobust.study.runner import run_study

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

STUDY = {
    "title": "tiny",
    "methods": ["standard", "fast"],
    "training": {"epochs": 2, "eval_every": 2, "eval_limit": 40, "eval_steps": 1,
                 "overfit_check_size": 16},
    "evaluation": {"eps": [0, 0.5, 1], "steps": 2, "restarts": 2, "limit": 40,
                   "attacks": ["pgd", "apgd-ce"]},
    "stages": ["train", "curves"],
}  # fmt: skip


def _comparable(doc: dict) -> dict:
    """The report without what differs between two runs of it: times, file paths."""
    doc = {k: v for k, v in doc.items() if k not in ("created", "paths")}
    doc["models"] = {
        label: {k: v for k, v in curve.items() if k not in ("time_s", "checks_time_s")}
        for label, curve in doc["models"].items()
    }
    for curve in doc["models"].values():  # the checks' own timings, where they record any
        curve["checks"] = [{k: v for k, v in c.items() if k != "time_s"} for c in curve["checks"]]
    return doc


def test_the_curves_stage_writes_what_eval_writes(tmp_path, capsys):
    out = tmp_path / "study"
    run_study(StudyConfig.from_dict(STUDY), out)
    runs = [str(out / "runs" / label) for label in ("standard", "fast")]
    flags = ["--norm", "l2", "--eps", "0,0.5,1", "--steps", "2", "--restarts", "2"]
    flags += ["--limit", "40", "--attack", "pgd,apgd-ce", "--no-progress"]
    assert main(["eval", *runs, *flags, "--out", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    study_dir, eval_dir = out / "curves", tmp_path / "eval"
    assert (study_dir / "robustness.csv").read_text() == (eval_dir / "robustness.csv").read_text()
    study_doc = json.loads((study_dir / "robustness.json").read_text())
    eval_doc = json.loads((eval_dir / "robustness.json").read_text())
    assert _comparable(study_doc) == _comparable(eval_doc)
    assert study_doc["paths"]["fast"].endswith("best.pt") and set(eval_doc["paths"]) == {
        "standard",
        "fast",
    }
    header = (eval_dir / "robustness.csv").read_text().splitlines()[0]
    assert header.split(",")[:4] == ["model", "norm", "eps", "accuracy"]  # the one format
    assert (study_dir / "robustness.png").stat().st_size > 1000
