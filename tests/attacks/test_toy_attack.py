"""Adding an attack is one file plus its registration (docs/architecture.md, "an attack").

This module is that file: it defines a toy attack (one random step of the norm's steepest-ascent
direction, deliberately overshooting the ball), registers it here only, and runs it through
:func:`~fastrobust.evaluation.curve.robustness_curve` (the cascade) and through ``fastrobust eval
--attack toy`` in-process, with nothing else edited. It checks the invariants (every perturbation
in the eps ball and the ``[0,1]`` box, although the toy itself returns points outside them), that
the curve equals a plain loop over the same seeded starts, and that the toy shows in the report.
The fixture unregisters it in teardown.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch

from fastrobust.attacks.registry import (
    AttackSpec,
    RunSettings,
    SeededRuns,
    attack_names,
    register_attack,
    run_attack,
    unregister_attack,
)
from fastrobust.attacks.restarts import seeded_starts, worst_case_over_restarts
from fastrobust.attacks.threat import L2, Linf, ThreatModel, threat_model
from fastrobust.cli import main
from fastrobust.errors import ConfigError
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.inputs import validate_attacks

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

OVERSHOOT = 3.0  # the toy steps this many radii, leaving the ball: the runner must project


def toy(model, x, y, threat: ThreatModel, start, settings, generator) -> torch.Tensor:
    """One step of ``OVERSHOOT * eps`` along the norm's direction of the random start (a random
    sign vector for L-inf, a random direction for L2), not projected back."""
    return x + threat.step(torch.zeros_like(x), start, OVERSHOOT * threat.eps)


TOY = AttackSpec(
    "toy",
    run=toy,
    budget=lambda settings, restarts: {"random_steps": 1, "restarts": restarts},
    gradients=lambda settings: 0,
    restartable=True,
)


@pytest.fixture
def toy_registered():
    register_attack(TOY)
    yield TOY
    unregister_attack("toy")


def toy_plain_loop(model, x, y, norm, eps_list, *, restarts, seed, batch_size):
    """Robust per eps and sample, each eps on its own: correct and no restart's projected step
    fools it (the curve's per-sample seeded starts)."""
    with torch.no_grad():
        robust = [model(x).argmax(1) == y for _ in eps_list]
        for j, eps in enumerate(eps_list):
            threat = threat_model(norm, eps)
            for r in range(restarts if eps > 0 else 0):
                for c, lo in enumerate(range(0, len(y), batch_size)):
                    xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
                    start = seeded_starts(
                        threat, xb, seed=seed, chunk=c, eps_index=j, attack_index=0, restart=r
                    )
                    delta = threat.project(OVERSHOOT * eps * threat.direction(start), xb)
                    robust[j][lo : lo + batch_size] &= model(xb + delta).argmax(1) == yb
    return torch.stack(robust).int().cummin(0).values.bool()  # fooled at eps_i: at eps_j too


def test_toy_is_listed_while_registered_and_unknown_after(toy_registered):
    assert attack_names()[-1] == "toy" and validate_attacks("pgd,toy") == ["pgd", "toy"]
    with pytest.raises(ConfigError, match="registered already"):
        register_attack(TOY)
    unregister_attack("toy")
    with pytest.raises(ConfigError, match="unknown attack 'toy'"):
        validate_attacks("toy")
    register_attack(TOY)  # for the fixture's teardown


@pytest.mark.parametrize("threat", [L2(1.0), Linf(0.1)], ids=["l2", "linf"])
def test_toy_results_stay_in_the_ball_and_the_box(toy_registered, mlp, points, threat):
    x, y = points
    raw = toy(mlp, x, y, threat, threat.sample(x), None, None)
    assert not threat.contains(raw - x, x).all()  # the toy alone leaves the threat model
    settings = RunSettings(1)
    runs = SeededRuns("toy", mlp, x, y, threat, key=(0,), settings=settings)
    delta = worst_case_over_restarts(runs, x, 3).delta
    one = run_attack("toy", mlp, x, y, threat, start=threat.sample(x), steps=1)
    for d in (delta, one):
        assert (threat.norm(d) <= threat.eps * (1 + 1e-5)).all()
        assert ((x + d) >= 0).all() and ((x + d) <= 1).all()
    assert runs.gradients == 0 and threat.norm(delta).max() > 0.5 * threat.eps


def test_toy_through_the_cascade_equals_the_plain_loop(toy_registered, mlp, points):
    x, y = points
    eps = [0.0, 0.5, 1.5, 3.0]
    kw = dict(restarts=3, seed=4, batch_size=32)  # three chunks (32, 32, 6)
    curve = robustness_curve(
        mlp, (x, y), "l2", eps, CurveSettings(attacks="toy", checks=False, **kw)
    )
    expected = toy_plain_loop(mlp, x, y, "l2", eps, **kw)
    assert torch.equal(curve.robust_mask, expected)
    assert 0 < curve.robust[-1] < curve.robust[1] < curve.n  # the oracle has teeth
    assert curve.budgets == {"toy": {"random_steps": 1, "restarts": 3}}
    assert curve.attack_gradients == 0
    # after PGD in a cascade it only sees what PGD left robust, and fools some of it at 3.0
    both = robustness_curve(
        mlp, (x, y), "l2", eps, CurveSettings(attacks="pgd,toy", steps=1, checks=False, **kw)
    )
    assert set(both.fooled_by[-1]) == {"clean", "smaller_eps", "pgd", "toy"}


def test_toy_through_the_eval_cli(toy_registered, trained_runs, tmp_path, capsys):
    out = tmp_path / "ev"
    rc = main(
        ["eval", str(trained_runs["fast"]), "--attack", "toy", "--eps", "0,1,4", "--restarts", "2"]
        + ["--limit", "30", "--no-progress", "--no-checks", "--out", str(out)]
    )
    stdout = capsys.readouterr().out
    assert rc == 0
    assert "toy (random_steps 1, restarts 2)" in stdout
    doc = json.loads((out / "robustness.json").read_text())
    fast = doc["models"]["fast"]
    assert fast["attacks"] == ["toy"] and fast["budgets"] == {
        "toy": {"random_steps": 1, "restarts": 2}
    }
    assert "toy" in doc["attack"] and fast["accuracy"][0] >= fast["accuracy"][2]
    rows = list(csv.DictReader((out / "robustness.csv").open()))
    assert len(rows) == 3 and all("toy:" in row["fooled_first_by"] for row in rows)
