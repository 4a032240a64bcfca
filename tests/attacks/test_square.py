"""Square Attack (Andriushchenko et al. 2020): schedule, proposals, invariants, masked gradients."""

from __future__ import annotations

import pytest
import torch

from fastrobust.attacks.apgd import apgd
from fastrobust.attacks.square import mountain, square, two_mountains, window_fraction
from fastrobust.attacks.threat import L2, Linf
from fastrobust.data.base import to_float
from fastrobust.errors import ConfigError
from masked_models import Quantised

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
THREATS = [L2(0.7), Linf(0.15)]


@pytest.fixture(scope="module")
def batch(digits):
    return to_float(digits.test_x[:64]), digits.test_y[:64]


def _accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_schedule_halves_p_at_the_papers_queries():
    assert window_fraction(0, 0.8, queries=5000) == 0.8
    assert window_fraction(10, 0.8, queries=5000) == 0.8
    assert window_fraction(11, 0.8, queries=5000) == 0.4
    assert window_fraction(201, 0.8, queries=5000) == 0.8 / 8
    assert window_fraction(4999, 0.8, queries=5000) == 0.8 / 128
    # stretched to the budget: query 500 of 1000 is query 5000 of the paper's 10,000
    assert window_fraction(500, 0.8, queries=1000, rescale=True) == 0.8 / 128


def test_mountains():
    m = mountain(5, 5)
    assert torch.isclose(m.norm(), torch.tensor(1.0))
    assert m[2, 2] == m.max() and torch.equal(m, m.T) and torch.equal(m, m.flip(0))
    assert m[0, 0] < m[1, 1] < m[2, 2]
    w = two_mountains(5)
    assert torch.isclose(w.norm(), torch.tensor(1.0))
    assert (w[:2] > 0).all() and (w[2:] < 0).all()


@pytest.mark.parametrize("threat", THREATS, ids=["l2", "linf"])
def test_invariants_and_strength(bn_mlp, batch, threat):
    model = bn_mlp
    x, y = batch
    model.train()
    stats = model[2].running_mean.clone()
    x_adv = square(model, x, y, threat, queries=500, generator=torch.Generator().manual_seed(0))
    assert model.training and torch.equal(model[2].running_mean, stats)
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    assert threat.contains(x_adv - x, x).all()
    assert _accuracy(model, x_adv, y) < _accuracy(model, x, y) - 0.2
    runs = [
        square(model, x, y, threat, queries=30, generator=torch.Generator().manual_seed(seed))
        for seed in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_l2_perturbations_use_the_whole_budget(bn_mlp):
    x = torch.full((8, 1, 8, 8), 0.5)  # far from the box: the norm is exactly eps
    threat = L2(0.7)
    y = torch.zeros(8, dtype=torch.long)
    x_adv = square(bn_mlp, x, y, threat, queries=20, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(threat.norm(x_adv - x), torch.full((8,), 0.7), atol=1e-5)


def test_restarts_never_lose_a_fooled_sample(bn_mlp, batch):
    x, y = batch
    threat = Linf(0.1)
    one = square(bn_mlp, x, y, threat, queries=30, generator=torch.Generator().manual_seed(0))
    three = square(bn_mlp, x, y, threat, queries=30, restarts=3,
                   generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert _accuracy(bn_mlp, three, y) <= _accuracy(bn_mlp, one, y)


@pytest.mark.parametrize("threat", THREATS, ids=["l2", "linf"])
def test_square_sees_through_masked_gradients(bn_mlp, batch, threat):
    """With zero input gradients APGD-CE cannot move (beyond its random start); Square, which
    only reads scores, brings the accuracy down as it does on the unmasked model."""
    masked = Quantised(bn_mlp)
    x, y = batch
    torch.manual_seed(0)
    by_gradient = _accuracy(masked, apgd(masked, x, y, threat, steps=20), y)
    g = torch.Generator().manual_seed(0)
    by_square = _accuracy(masked, square(masked, x, y, threat, queries=500, generator=g), y)
    assert by_gradient > _accuracy(masked, x, y) - 0.1
    assert by_square < by_gradient - 0.3


def test_bad_arguments(bn_mlp, batch):
    x, y = batch
    for kw in ({"queries": 0}, {"restarts": 0}, {"p_init": 0.0}, {"p_init": 1.5}):
        with pytest.raises(ConfigError):
            square(bn_mlp, x[:2], y[:2], L2(0.5), **kw)
    with pytest.raises(ConfigError, match="N x C x H x W"):
        square(bn_mlp, x[:2].flatten(1), y[:2], L2(0.5))


@pytest.mark.parametrize("threat", THREATS, ids=["l2", "linf"])
def test_one_run_over_several_eps(bn_mlp, batch, threat):
    # per-row eps with one value is the one-eps run, query for query (same seed; up to float
    # rounding of eps as a tensor)
    x, y = batch[0][:20], batch[1][:20]
    g = torch.Generator
    alone = square(bn_mlp, x, y, threat, queries=40, generator=g().manual_seed(1))
    same = threat.per_row(torch.full((20,), threat.eps))
    rows = square(bn_mlp, x, y, same, queries=40, generator=g().manual_seed(1))
    assert torch.allclose(rows, alone, atol=1e-5)
    # (point, eps) pairs for three eps in one batch: each row inside its own ball and the box
    radii = torch.tensor([0.25, 0.5, 1.0]).repeat_interleave(20) * threat.eps
    pairs = threat.per_row(radii)
    xs, ys = x.repeat(3, 1, 1, 1), y.repeat(3)
    x_adv = square(bn_mlp, xs, ys, pairs, queries=40, generator=g().manual_seed(1))
    delta = x_adv - xs
    assert (threat.norm(delta) <= radii * (1 + 1e-5) + 1e-7).all()
    assert ((x_adv >= 0) & (x_adv <= 1)).all()
    assert (threat.norm(delta[40:]) > 0.5 * threat.eps * 1.01).any()  # the largest eps is used
