"""Evaluation settings (one default each, errors naming the field) and the workflow that
``fastrobust eval`` and the study share."""

from __future__ import annotations

import json

import pytest

from fastrobust.attacks.registry import RunSettings
from fastrobust.cli import main
from fastrobust.errors import ConfigError
from fastrobust.evaluation import CurveSettings, EvaluationSettings, evaluate
from fastrobust.evaluation.results import RobustnessCurve
from fastrobust.evaluation.settings import RESTARTS, STEPS
from fastrobust.settings import render_error

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def test_defaults_are_the_papers_and_the_attack_layers():
    s = CurveSettings()
    assert (s.attacks, s.steps, s.restarts) == (["pgd"], None, None)  # None: 20 and 10
    assert (STEPS, RESTARTS) == (20, 10)
    assert (s.queries, s.targets, s.eot) == (RunSettings.queries, RunSettings.targets, 1)
    assert CurveSettings(attacks="PGD, apgd-ce").attacks == ["pgd", "apgd-ce"]


@pytest.mark.parametrize(
    ("keywords", "library", "cli"),
    [
        ({"steps": 0}, "evaluation.steps must be >= 1, got 0", "--steps must be >= 1, got 0"),
        ({"attacks": "fgsm"}, "unknown attack 'fgsm'", "unknown attack 'fgsm'"),
        (
            {"attacks": "autoattack", "restarts": 2},
            "leave evaluation.restarts out",
            "leave --restarts out",
        ),
        ({"eps": "0,x"}, "evaluation.eps value 'x' is not a number", "--eps value 'x'"),
        ({"eps": [1, 0.5]}, "evaluation.eps values must be strictly increasing", "--eps values"),
        ({"dataset": 3}, "evaluation.dataset: expected text or null", "--data: expected text"),
    ],
)
def test_errors_name_the_field_and_the_command_line_its_flag(keywords, library, cli):
    with pytest.raises(ConfigError) as caught:
        EvaluationSettings(**keywords)
    assert library in str(caught.value) and "--" not in str(caught.value)
    from fastrobust.cli import build_parser

    args = build_parser().parse_args(["eval", "run"])
    rendered = render_error(caught.value, args.flag_of)
    assert cli in rendered and "evaluation." not in rendered


def test_evaluate_writes_the_report_and_returns_the_curves(trained_runs, tmp_path):
    settings = EvaluationSettings(
        steps=2, restarts=1, limit=20, eps=[0, 1], out=str(tmp_path / "ev"), progress=False
    )
    result = evaluate([trained_runs["fast"]], settings)
    assert result.settings.norm == "l2" and result.dataset == "digits"  # from the checkpoint
    curve = result.curves["fast"]
    assert curve.n == 20 and curve.steps == 2 and curve.eps == [0, 1]
    doc = json.loads(result.written["json"].read_text())
    assert doc["settings"] == settings.curve_only().to_dict()
    assert doc["models"]["fast"] == curve.to_dict()
    # a saved curve reads back into the same document (the study writes reports so)
    again = RobustnessCurve.from_dict(doc["models"]["fast"], curve.model_info)
    assert again.to_dict() == curve.to_dict()


def test_evaluate_checks_the_output_folder_before_any_work(trained_runs, tmp_path):
    (tmp_path / "file").write_text("x")
    settings = EvaluationSettings(eps=[0, 1], out=str(tmp_path / "file"), progress=False)
    with pytest.raises(Exception, match="evaluation.out .* is an existing file") as caught:
        evaluate([trained_runs["fast"]], settings)
    assert render_error(caught.value, {"evaluation.out": "--out"}).startswith("--out ")
    assert main(["eval", str(trained_runs["fast"]), "--out", str(tmp_path / "file")]) == 2
