"""AutoAttack's attacks in the robustness curve: FAB-T shared over the eps grid, the versions,
budgets and seeds in the report, and one-line errors for bad input."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from fastrobust.attacks.registry import VERSIONS
from fastrobust.errors import ConfigError, DataError
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.report import format_fooled_by, write_report

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
EPS = [0.25, 0.5, 1.0]
SMALL = {"steps": 10, "restarts": 1, "targets": 3, "queries": 50, "checks": False}


def test_fab_runs_once_and_settles_every_eps(mlp, points):
    """Over a grid, FAB-T's minimal norms answer every eps from one run: the grid fools at
    least the points that a separate curve at each eps fools (APGD from zero starts, so both
    are deterministic), for less attack work than the separate curves together."""
    x, y = points
    kw = dict(SMALL, attacks="apgd-ce,fab-t", random_start="none")
    grid = robustness_curve(mlp, (x, y), "l2", EPS, CurveSettings(**kw))
    singles = [robustness_curve(mlp, (x, y), "l2", [eps], CurveSettings(**kw)) for eps in EPS]
    for j, single in enumerate(singles):
        assert grid.robust[j] <= single.robust[0] + 1, (EPS[j], grid.robust, single.robust)
        assert grid.fooled_by[j]["fab-t"] + grid.fooled_by[j]["smaller_eps"] > 0 or j == 0
    assert grid.attack_gradients < sum(s.attack_gradients for s in singles)
    # FAB-T settled points at larger eps without running again: its counts beyond the first
    # eps come from the norms found there
    assert sum(grid.fooled_by[j]["fab-t"] for j in range(1, len(EPS))) > 0


def test_any_subset_in_any_order_with_budgets_in_the_report(mlp, points, tmp_path):
    x, y = points
    curve = robustness_curve(
        mlp, (x[:30], y[:30]), "linf", [0.05, 0.1], CurveSettings(attacks="square,apgd-t", **SMALL)
    )
    assert curve.attacks == ["square", "apgd-t"]
    assert curve.budgets == {
        "square": {"queries": 50, "p_init": 0.8},
        "apgd-t": {"steps": 10, "targets": 3, "eot": 1},
    }
    for j in range(2):
        counts = curve.fooled_by[j]
        assert sum(counts.values()) + curve.robust[j] == 30
    table = format_fooled_by({"mlp": curve})
    assert "square" in table.splitlines()[1] and "robust" in table.splitlines()[1]
    paths = write_report(tmp_path, {"mlp": curve})
    rows = list(csv.DictReader(paths["csv"].open()))
    assert (
        rows[0]["fooled_first_by"].startswith("clean:") and "square:" in rows[0]["fooled_first_by"]
    )
    assert rows[0]["seed"] == "0" and "queries 50" in rows[0]["attack"]


def test_versions_fix_their_budgets():
    names, settings, restarts = VERSIONS["autoattack"]
    assert names == ("apgd-ce", "apgd-t", "fab-t", "square") and restarts == 1
    assert (settings.steps, settings.targets, settings.queries, settings.eot) == (100, 9, 5000, 1)
    names, settings, _ = VERSIONS["autoattack-rand"]
    assert names == ("apgd-ce", "apgd-dlr") and settings.eot == 20


class Probabilities(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).softmax(1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attacks": "autoattack,pgd"}, "whole cascade"),
        ({"attacks": "autoattack", "steps": 20}, "own budgets"),
        ({"attacks": "fab-x"}, "unknown attack 'fab-x'"),
        ({"attacks": "square", "queries": 0}, "queries must be >= 1"),
        ({"attacks": "apgd-t", "targets": 0}, "targets must be >= 1"),
        ({"attacks": "apgd-ce", "eot": 0}, "eot must be >= 1"),
    ],
)
def test_bad_input_is_one_clear_error(mlp, points, kwargs, message):
    x, y = points
    with pytest.raises(ConfigError, match=message):
        robustness_curve(mlp, (x[:4], y[:4]), "l2", [0.5], CurveSettings(checks=False, **kwargs))


def test_probabilities_are_refused(mlp, points):
    x, y = points
    with pytest.raises(DataError, match="need logits"):
        robustness_curve(
            Probabilities(mlp),
            (x[:4], y[:4]),
            "l2",
            [0.5],
            CurveSettings(attacks="autoattack", checks=False),
        )


def test_targets_clipped_to_the_classes_with_a_note(points):
    x, y = points
    five = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    y5 = y % 5
    curve = robustness_curve(
        five,
        (x[:8], y5[:8]),
        "l2",
        [0.5],
        CurveSettings(attacks="apgd-t,fab-t", **SMALL | {"targets": 9}),
    )
    assert any("9 target classes asked for, the model has 5 classes" in n for n in curve.notes)
    assert curve.budgets["apgd-t"]["targets"] == 4
    assert not math.isnan(curve.accuracy[0])


def test_square_attacks_every_pair_still_robust_over_the_grid(mlp, points):
    # Square ends the cascade, so it runs over the (point, eps) pairs of the whole grid at once;
    # every pair the earlier attacks left robust (at its eps and every smaller one) must be in
    # it, with the whole query budget and its own radius, and nothing else
    from dataclasses import replace

    from fastrobust.attacks.registry import attack_spec, register_attack

    x, y = points
    kw = dict(SMALL, steps=1, queries=200, random_start="none")  # a weak APGD leaves Square work
    before = robustness_curve(
        mlp, (x, y), "l2", [0.0, *EPS], CurveSettings(attacks="apgd-ce", **kw)
    )
    calls, square = [], attack_spec("square")

    def spy(model, xs, ys, threat, start, settings, generator):
        x_adv = square.run_once(model, xs, ys, threat, start, settings, generator)
        calls.append((xs, threat.eps.clone(), settings.queries, model(x_adv).argmax(1) != ys))
        return x_adv

    register_attack(replace(square, run=spy), replace=True)
    try:
        curve = robustness_curve(
            mlp, (x, y), "l2", [0.0, *EPS], CurveSettings(attacks="apgd-ce,square", **kw)
        )
    finally:
        register_attack(square, replace=True)
    assert 1 <= len(calls) <= len(EPS) and {c[2] for c in calls} == {200}  # the whole budget
    xs, radii, fooled = (torch.cat([c[k] for c in calls]) for k in (0, 1, 3))
    expected = [(e, i) for j, e in enumerate(EPS, 1) for i in before.robust_mask[j].nonzero()]
    index = [int((x == p).flatten(1).all(1).nonzero()[0]) for p in xs]
    pairs = sorted(zip(radii.tolist(), index))
    assert pairs == sorted((e, int(i)) for e, i in expected)  # every robust pair, nothing else
    # robust at eps: apgd-ce missed it and Square fooled it at no eps <= this one
    hit = torch.zeros_like(before.robust_mask)
    for r, i, f in zip(radii.tolist(), index, fooled):
        hit[EPS.index(r) + 1, i] = f
    assert fooled.any() and (~fooled).any()  # the comparison has teeth
    expected_mask = before.robust_mask & ~hit.int().cummax(0).values.bool()
    assert torch.equal(curve.robust_mask, expected_mask)
    for j in range(1, len(EPS) + 1):  # credited as a cascade run eps by eps would credit it
        counts = curve.fooled_by[j]
        assert sum(counts.values()) + curve.robust[j] == len(y)
        assert counts["square"] == int((hit[j] & ~hit[:j].any(0)).sum())
        assert counts["smaller_eps"] == int((expected_mask[0] & ~expected_mask[j - 1]).sum())


def test_grid_batches_pack_small_eps_together():
    from fastrobust.evaluation.curve import _pack

    assert _pack([84, 62, 7, 0, 0]) == [[0], [1, 2]]  # the benchmark's grid: 2 runs, not 3
    assert _pack([5, 5, 5]) == [[0], [1], [2]]  # never a batch larger than one eps's
    assert _pack([10, 3, 4, 6]) == [[0], [2, 3], [1]]
    assert _pack([0, 0]) == []
