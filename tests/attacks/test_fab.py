"""FAB / FAB-T (Croce & Hein 2020): minimal perturbations, invariants, one run for every eps."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from fastrobust.attacks.contract import clip_target_count, target_classes
from fastrobust.attacks.fab import fab
from fastrobust.attacks.threat import L2, Linf
from fastrobust.data.base import to_float
from fastrobust.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
THREATS = [L2(0.7), Linf(0.12)]


@pytest.fixture(scope="module")
def batch(digits):
    return to_float(digits.test_x[:48]), digits.test_y[:48]


def _predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("threat", THREATS, ids=["l2", "linf"])
def test_perturbations_are_adversarial_valid_and_minimal_norms(bn_mlp, batch, threat):
    model = bn_mlp
    x, y = batch
    model.train()  # the attack must run in eval mode and give the training mode back
    stats = model[2].running_mean.clone()
    found = fab(model, x, y, threat, targets=3, steps=20)
    assert model.training and torch.equal(model[2].running_mean, stats)
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    hit = found.norm < math.inf
    assert hit.float().mean() > 0.9  # FAB is not bounded by eps: nearly every point is fooled
    assert ((x + found.delta) >= 0).all() and ((x + found.delta) <= 1).all()
    assert torch.allclose(threat.norm(found.delta[hit]), found.norm[hit], atol=1e-6)
    assert (_predict(model, x + found.delta)[hit] != y[hit]).all()
    assert (found.delta[~hit] == 0).all()
    misclassified = _predict(model, x) != y
    assert (found.norm[misclassified] == 0).all()
    # it reduces accuracy at eps (a standard model)
    assert found.fooled_at(threat.eps).float().mean() > misclassified.float().mean() + 0.3


@pytest.mark.parametrize("threat", THREATS, ids=["l2", "linf"])
def test_one_run_answers_every_eps(bn_mlp, batch, threat):
    """Minimising over every target (``enough=0``) fools, at each eps, the points AutoAttack's
    FAB-T at that eps fools (it stops a point at its first success within eps)."""
    x, y = batch
    everything = fab(bn_mlp, x, y, threat, targets=3, steps=20)
    for scale in (0.5, 1.0, 1.5):
        eps = threat.eps * scale
        at_eps = fab(bn_mlp, x, y, threat, targets=3, steps=20, enough=eps)
        mismatch = (everything.fooled_at(eps) != at_eps.fooled_at(eps)).sum()
        assert mismatch <= 1, (eps, int(mismatch))  # batch composition may move a last digit
        assert (everything.norm <= at_eps.norm + 1e-6).all()


def test_untargeted_and_restarts_deterministic_under_a_seed(bn_mlp, batch):
    x, y = batch
    threat = L2(0.7)
    runs = [
        fab(bn_mlp, x, y, threat, targeted=False, steps=10, restarts=2,
            generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]  # fmt: skip
    assert torch.equal(runs[0].norm, runs[1].norm) and torch.equal(runs[0].delta, runs[1].delta)
    assert runs[0].fooled_at(threat.eps).float().mean() > 0.5


def test_targets_are_the_top_other_classes():
    logits = torch.tensor([[0.0, 5.0, 3.0, 4.0], [9.0, 1.0, 2.0, 0.0]])
    assert target_classes(logits, torch.tensor([1, 2]), 2).tolist() == [[3, 2], [0, 1]]


def test_target_count_is_clipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert clip_target_count(9, 4) == 3
    assert "model has 4 classes: using 3" in caplog.text
    assert clip_target_count(2, 10) == 2
    for bad in ((0, 10), (1, 1)):
        with pytest.raises(ConfigError):
            clip_target_count(*bad)


def test_bad_arguments(bn_mlp, batch):
    x, y = batch
    for kw in ({"steps": 0}, {"restarts": 0}, {"alpha_max": 0.0}, {"backtrack": 1.0},
               {"overshoot": 0.5}, {"targets": 0}):  # fmt: skip
        with pytest.raises(ConfigError):
            fab(bn_mlp, x[:2], y[:2], L2(0.5), **kw)
