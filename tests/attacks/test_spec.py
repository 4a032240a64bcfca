"""The attack specs: what each built-in one declares is what it does (gradients, classes)."""

from __future__ import annotations

import pytest
from torch import nn

from conftest import GradientCounter
from fastrobust.attacks.registry import (
    AttackSpec,
    RunSettings,
    SeededRuns,
    attack_names,
    attack_spec,
)
from fastrobust.attacks.restarts import worst_case_over_restarts
from fastrobust.attacks.threat import L2
from fastrobust.errors import ConfigError
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.mark.parametrize("name", attack_names())
def test_declared_gradients_bound_what_a_run_spends(name, mlp, points):
    x, y = points[0][:16], points[1][:16]
    model = GradientCounter(mlp)
    settings = RunSettings(3, targets=2, queries=5, eot=2)
    runs = SeededRuns(name, model, x, y, L2(1.0), key=(0,), settings=settings)
    worst_case_over_restarts(runs, x, 1)
    spec = attack_spec(name)
    assert model.attacked <= spec.gradients(settings) * len(y), (name, model.attacked)
    assert runs.gradients == spec.gradients(settings) * len(y)
    if spec.gradients(settings) == 0:
        assert model.attacked == 0  # a query attack: forward passes only


@pytest.mark.parametrize(
    ("attacks", "classes", "message"),
    [
        ("apgd-dlr", 2, "apgd-dlr needs a model with at least 3 classes"),
        ("pgd,apgd-t", 3, r"apgd-t \(targeted DLR loss\) needs a model with at least 4 classes"),
    ],
)
def test_too_few_classes_is_one_clear_error(points, attacks, classes, message):
    x, y = points
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, classes))
    with pytest.raises(ConfigError, match=message):
        robustness_curve(
            model, (x[:8], y[:8] % classes), "l2", [0.5],
            CurveSettings(attacks=attacks, checks=False),
        )  # fmt: skip


def test_enough_classes_run(points):
    x, y = points
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    curve = robustness_curve(three, (x[:8], y[:8] % 3), "l2", [0.5],
                             CurveSettings(attacks="apgd-dlr", steps=1, restarts=1, checks=False))  # fmt: skip
    assert curve.attacks == ["apgd-dlr"]


def test_a_spec_runs_one_way():
    def budget(settings, restarts):
        return {}

    def gradients(settings):
        return 0

    with pytest.raises(ConfigError, match="exactly one of run and minimal"):
        AttackSpec("neither", budget=budget, gradients=gradients)
    with pytest.raises(ConfigError, match="lower case"):
        AttackSpec("Upper", run=lambda *a: a[1], budget=budget, gradients=gradients)
    with pytest.raises(ConfigError, match="unknown attack 'nope'"):
        attack_spec("nope")


def test_built_in_properties():
    # the facts the cascade used to read from parallel tables
    def names(flag: str) -> list[str]:
        return [n for n in attack_names() if getattr(attack_spec(n), flag)]

    assert attack_names() == ("pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square", "fab-t", "fab")
    assert names("restartable") == ["pgd", "apgd-ce", "apgd-dlr"]
    assert names("per_row_eps") == ["square"]
    assert names("targeted") == ["apgd-t", "fab-t"]
    assert names("needs_logits") == ["apgd-t", "square", "fab-t", "fab"]
    assert [n for n in attack_names() if attack_spec(n).minimal is not None] == ["fab-t", "fab"]
