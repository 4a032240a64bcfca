"""robustness_curve: the same answer as the plain loop, with less work; the model left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import GradientCounter
from fastrobust.attacks.restarts import seeded_starts
from fastrobust.attacks.threat import threat_model
from fastrobust.data.base import to_float
from fastrobust.data.subsets import stratified_subset
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve

EPS = [0.0, 0.3, 0.6, 1.2]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def plain_loop(model, x, y, eps_list, *, steps, restarts, seed, batch_size, factor=2.5):
    """The naive evaluation: every eps, every restart, plain PGD on every sample.

    Returns ``fooled[j][r]`` (bool per sample: restart ``r`` at ``eps_list[j]`` fooled it) and
    the clean-correct mask. Starts are the curve's per-sample seeded ones.
    """
    fooled = []
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    for j, eps in enumerate(eps_list):
        threat = threat_model("l2", eps)
        per_restart = []
        for r in range(restarts if eps > 0 else 0):
            hits = []
            for c, lo in enumerate(range(0, len(y), batch_size)):
                xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
                delta = seeded_starts(
                    threat, xb, seed=seed, chunk=c, eps_index=j, attack_index=0, restart=r
                )
                for _ in range(steps):
                    xg = (xb + delta).requires_grad_(True)
                    loss = torch.nn.functional.cross_entropy(model(xg), yb, reduction="none").sum()
                    (grad,) = torch.autograd.grad(loss, xg)
                    delta = threat.project(threat.step(delta, grad, factor * eps / steps), xb)
                with torch.no_grad():
                    hits.append(model(xb + delta).argmax(1) != yb)
            per_restart.append(torch.cat(hits))
        fooled.append(per_restart)
    return fooled, clean


def curve_and_plain_loop(model, mlp, points, **kw):
    """The curve of ``model`` (``mlp`` or a wrapper of it) and the plain loop's results."""
    x, y = points
    curve = robustness_curve(model, (x, y), "l2", EPS, CurveSettings(checks=False, **kw))
    return curve, *plain_loop(mlp, x, y, EPS, **kw)


def test_curve_equals_the_plain_loop(mlp, points):
    # three chunks (32, 32, 6)
    curve, fooled, clean = curve_and_plain_loop(
        mlp, mlp, points, steps=4, restarts=3, seed=5, batch_size=32
    )
    robust_each = torch.stack(
        [clean & ~torch.stack(f).any(0) if f else clean for f in fooled]
    )  # plain loop, each eps on its own
    expected = (
        robust_each.int().cummin(0).values.bool()
    )  # fooled at eps_i => fooled at eps_j > eps_i
    assert torch.equal(curve.robust_mask, expected)
    assert curve.robust == [int(r) for r in expected.sum(1)]
    assert curve.clean_correct == int(clean.sum())
    # the comparison has teeth: later restarts fool samples the first one did not, and the
    # accuracy spans more than all-or-nothing
    later_restarts = torch.stack(fooled[1][1:]).any(0) & ~fooled[1][0] & clean
    assert later_restarts.any()
    assert 0 < curve.robust[1] < curve.n and curve.robust[-1] < curve.robust[1]


def test_fooled_samples_are_never_attacked_again(mlp, points):
    steps, restarts = 3, 4
    counted = GradientCounter(mlp)
    curve, fooled, clean = curve_and_plain_loop(
        counted, mlp, points, steps=steps, restarts=restarts, seed=1, batch_size=40
    )
    expected = 0
    done = ~clean  # misclassified clean: never attacked
    for per_restart in fooled:
        for hit in per_restart:
            expected += steps * int((~done).sum())  # only the still-robust run the restart
            done = done | hit
    assert counted.attacked == expected == curve.attack_gradients
    naive = steps * restarts * len(clean) * sum(e > 0 for e in EPS)
    assert expected < naive / 2


def test_cascade_only_removes_robust_samples(mlp, points):
    x, y = points
    kw = dict(steps=4, restarts=2, seed=3, checks=False)
    alone = robustness_curve(mlp, (x, y), "l2", EPS, CurveSettings(attacks="pgd", **kw))
    cascade = robustness_curve(
        mlp, (x, y), "l2", EPS, CurveSettings(attacks="pgd,apgd-ce,apgd-dlr", **kw)
    )
    assert not (cascade.robust_mask & ~alone.robust_mask).any()  # pgd part is identical
    assert sum(cascade.robust) < sum(alone.robust)
    j = 2
    by = cascade.fooled_by[j]
    assert by["clean"] + by["smaller_eps"] + by["pgd"] + by["apgd-ce"] + by["apgd-dlr"] == (
        cascade.n - cascade.robust[j]
    )


def test_data_forms_and_limit_agree(mlp, digits):
    """``limit`` evaluates the stratified subset of the seed, which the curve records."""
    kw = dict(steps=3, restarts=2, checks=False, seed=3)
    a = robustness_curve(mlp, digits, "l2", [0.5, 1.0], CurveSettings(limit=50, **kw))
    idx = stratified_subset(digits.test_y, 50, 3)
    assert a.data["sample"]["indices"] == idx.tolist()
    b = robustness_curve(
        mlp, (digits.test_x[idx], digits.test_y[idx]), "l2", [0.5, 1.0], CurveSettings(**kw)
    )
    c = robustness_curve(
        mlp,
        (to_float(digits.test_x[idx]), digits.test_y[idx]),
        "l2",
        [0.5, 1.0],
        CurveSettings(**kw),
    )
    assert torch.equal(a.robust_mask, b.robust_mask) and torch.equal(a.robust_mask, c.robust_mask)
    assert a.subset == "a class-stratified sample of 50 of 360 test points (seed 3)"
    assert b.subset == "all 50 given points"


def test_eps_zero_is_clean_accuracy_without_attacks(mlp, points):
    counted = GradientCounter(mlp)
    curve = robustness_curve(counted, points, "linf", [0.0], CurveSettings(checks=False))
    assert counted.attacked == 0 and curve.attack_gradients == 0
    assert curve.accuracy == [curve.clean_accuracy]


def test_model_state_is_left_alone(digits, points):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    )
    net.train()
    stats = net[2].running_mean.clone()
    robustness_curve(net, points, "l2", [0.5], CurveSettings(steps=2, restarts=2, check_size=8))
    assert net.training and net[2].training
    assert torch.equal(net[2].running_mean, stats)
    assert all(p.grad is None for p in net.parameters())
