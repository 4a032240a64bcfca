"""Gradient-masking checks: a healthy model passes, each masking symptom is flagged."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from fastrobust.attacks.threat import L2
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.masking import CheckInputs, Stream, run_checks

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
EPS = [0.0, 0.3, 0.6, 1.2]


def test_healthy_model_passes_every_check(mlp, points):
    curve = robustness_curve(
        mlp, points, "l2", EPS, CurveSettings(steps=5, restarts=2, check_size=32)
    )
    names = [c.name for c in curve.checks]
    assert names == [
        "logits",
        "deterministic",
        "gradients",
        "noise",
        "monotone_eps",
        "monotone_steps",
        "large_eps",
    ]
    assert curve.warnings == [], curve.warnings


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, ANN205
        return -g


class Lying(nn.Module):
    """Gradients that point the wrong way: the attack walks away from misclassification."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_ReverseGrad.apply(x))


class Quantised(nn.Module):
    """Rounds the input: zero gradients everywhere (a classic masking defence)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


class Noisy(nn.Module):
    """Dropout that stays on at test time: a randomised model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.nn.functional.dropout(x, 0.3, training=True))


def _failed(curve) -> set[str]:
    return {c.name for c in curve.checks if not c.passed}


def test_checks_flag_probabilities(mlp, points):
    curve = robustness_curve(
        nn.Sequential(mlp, nn.Softmax(1)), points, "l2", [0.5], CurveSettings(steps=3, restarts=1)
    )
    assert "logits" in _failed(curve)
    assert any("probabilities" in w for w in curve.warnings)


def test_checks_flag_zero_gradients(mlp, points):
    curve = robustness_curve(
        Quantised(mlp), points, "l2", [0.5, 1.0], CurveSettings(steps=3, restarts=1)
    )
    assert "gradients" in _failed(curve)


def test_checks_flag_misleading_gradients(mlp, points):
    curve = robustness_curve(
        Lying(mlp), points, "l2", [0.3, 0.6, 1.2], CurveSettings(steps=5, restarts=2)
    )
    assert {"noise", "large_eps"} <= _failed(curve)


def _inputs(model, points, curve) -> CheckInputs:
    """The checks' inputs of a curve computed without them."""
    x, y = points
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == y
    before = torch.cat([clean_correct[None], curve.robust_mask[:-1]])
    return CheckInputs(
        model=model,
        x=x,
        y=y,
        curve=curve,
        threat=L2(1.0),
        clean_correct=clean_correct,
        fooled_by_attack=before & ~curve.robust_mask,
        unstable=0,
        device=torch.device("cpu"),
        batch_size=500,
        check_size=16,
    )


def test_checks_flag_accuracy_rising_with_steps_or_eps(mlp, points):
    curve = robustness_curve(
        mlp, points, "l2", [0.3, 0.6], CurveSettings(steps=2, restarts=1, checks=False)
    )
    inputs = _inputs(mlp, points, curve)
    assert {c.name for c in run_checks(inputs) if not c.passed} == set()

    def fake(inputs, idx, threat, *, steps, stream, eps_index, restarts=1):
        """An attack that gets weaker with more steps and at larger eps."""
        if stream is Stream.MONOTONE_STEPS:
            return idx.numel() if steps > inputs.curve.steps else 0
        return idx.numel() if stream is Stream.MONOTONE_EPS else 0

    checks = run_checks(replace(inputs, count_survivors=fake))
    assert {c.name for c in checks if not c.passed} == {"monotone_steps", "monotone_eps"}
    messages = [c.message for c in checks]
    assert any("rose with more steps" in m for m in messages)
    assert any("survived a fresh attack" in m for m in messages)


def test_checks_flag_randomness(mlp, points):
    curve = robustness_curve(
        Noisy(mlp), points, "l2", [0.5, 1.0], CurveSettings(steps=3, restarts=1)
    )
    assert "deterministic" in _failed(curve)
