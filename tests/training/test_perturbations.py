"""The maths of N-FGSM, GradAlign and free adversarial training, for both norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastrobust.attacks.threat import L2, Linf, ThreatModel
from fastrobust.errors import ConfigError
from fastrobust.training.perturbations import (
    carry_perturbation,
    free_update,
    gradalign_default_lambda,
    gradalign_penalty,
    nfgsm_bound,
    nfgsm_noise,
    nfgsm_perturbation,
    nfgsm_step,
)

THREATS = [L2(1.0), Linf(0.1)]


def _mlp(seed: int = 0, classes: int = 10, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, classes), nn.BatchNorm1d(classes)
    ).to(dtype)


def _batch(n: int = 16, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = (0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g)).to(dtype)  # box far from eps
    return x, torch.randint(0, 10, (n,), generator=g)


# -- N-FGSM -------------------------------------------------------------------------------------
@pytest.mark.parametrize("threat", THREATS, ids=lambda t: t.name)
def test_nfgsm_obeys_its_own_bound_and_leaves_the_eps_ball(threat: ThreatModel):
    torch.manual_seed(0)
    model = _mlp()
    x, y = _batch(64)
    x_adv = nfgsm_perturbation(model, x, y, threat)
    delta = x_adv - x
    norms = threat.norm(delta)
    assert (norms <= nfgsm_bound(threat, 2.0, threat.eps) * (1 + 1e-5)).all()
    assert ((x_adv >= 0) & (x_adv <= 1)).all()
    # no projection back to the eps ball, by design: most samples end outside it
    assert (norms > threat.eps * 1.01).float().mean() > 0.5


@pytest.mark.parametrize("threat", THREATS, ids=lambda t: t.name)
def test_nfgsm_noise_fills_the_larger_ball(threat: ThreatModel):
    torch.manual_seed(0)
    x = torch.full((2000, 1, 8, 8), 0.5)
    noise = nfgsm_noise(threat, x, noise_factor=2.0)
    norms = threat.norm(noise)
    assert (norms <= 2 * threat.eps * (1 + 1e-5)).all()
    assert norms.max() > 1.9 * threat.eps
    assert (norms > threat.eps).float().mean() > 0.4


def test_nfgsm_step_is_noise_plus_one_full_step():
    threat = Linf(0.05)
    x, _ = _batch(8)
    noise = nfgsm_noise(threat, x, noise_factor=2.0)
    grad = torch.randn_like(x)
    delta = nfgsm_step(threat, x, noise, grad, threat.eps)
    torch.testing.assert_close(delta, noise + threat.eps * grad.sign())


def test_nfgsm_zero_noise_is_fgsm_and_leaves_model_as_found():
    threat = L2(0.5)
    model = _mlp().train()
    x, y = _batch(8)
    x_adv = nfgsm_perturbation(model, x, y, threat, noise_factor=0.0)
    torch.testing.assert_close(threat.norm(x_adv - x), torch.full((8,), 0.5))
    assert model.training and model[-1].num_batches_tracked == 0
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ConfigError):
        nfgsm_noise(threat, x, noise_factor=-1.0)


# -- GradAlign ----------------------------------------------------------------------------------
def test_gradalign_is_zero_for_a_linear_two_class_model():
    # softmax cross-entropy of a linear 2-class model has input gradient p * (w1 - w0) (up to a
    # positive factor and the label's sign): its direction never changes, so the cosine is 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).double()
    x, _ = _batch(32, torch.float64)
    y = torch.randint(0, 2, (32,))
    penalty = gradalign_penalty(model, x, y, Linf(0.3))
    assert abs(float(penalty.detach())) < 1e-10


@pytest.mark.parametrize("threat", [L2(3.0), Linf(0.3)], ids=lambda t: t.name)
def test_gradalign_is_positive_where_gradients_disagree_and_reaches_the_weights(threat):
    model = _mlp(dtype=torch.float64).eval()
    x, y = _batch(32, torch.float64)
    gen = torch.Generator().manual_seed(5)
    penalty = gradalign_penalty(model, x, y, threat, generator=gen)
    assert 1e-4 < float(penalty.detach()) <= 2.0
    penalty.backward()  # double backpropagation
    first = model[1].weight
    assert first.grad is not None and float(first.grad.abs().sum()) > 0
    # the gradient is the real one: a small step against it lowers the same (seeded) penalty
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 1e-3 * p.grad / p.grad.norm().clamp_min(1e-12)
    gen = torch.Generator().manual_seed(5)
    after = gradalign_penalty(model, x, y, threat, generator=gen)
    assert float(after.detach()) < float(penalty.detach())


def test_gradalign_keeps_batchnorm_statistics_and_mode():
    model = _mlp().train()
    x, y = _batch(8)
    before = model[-1].running_mean.clone()
    gradalign_penalty(model, x, y, L2(1.0))
    assert model.training
    torch.testing.assert_close(model[-1].running_mean, before)


def test_gradalign_default_lambda_follows_the_papers_rule():
    assert gradalign_default_lambda(Linf(8 / 255)) == pytest.approx(0.2)
    assert gradalign_default_lambda(Linf(16 / 255)) == pytest.approx(2.0)
    assert gradalign_default_lambda(Linf(4 / 255)) == pytest.approx(0.02 * 10**0.5)
    assert gradalign_default_lambda(Linf(0.3)) == pytest.approx(2.0)  # held beyond 16/255
    assert gradalign_default_lambda(L2(0.5)) == pytest.approx(0.2)


# -- free adversarial training ------------------------------------------------------------------
@pytest.mark.parametrize("threat", THREATS, ids=lambda t: t.name)
def test_free_perturbation_stays_in_the_ball_across_replays_and_batches(threat: ThreatModel):
    torch.manual_seed(0)
    delta = None
    for batch in range(3):
        x = torch.rand(16 - 4 * (batch == 2), 1, 8, 8)  # the last batch is smaller
        delta = carry_perturbation(threat, delta, x)
        assert threat.contains(delta, x).all()
        for _ in range(4):  # replays: the same images, a fresh gradient each time
            delta = free_update(threat, delta, torch.randn_like(x), x)
            assert threat.contains(delta, x).all()
    assert threat.norm(delta).max() > 0.5 * threat.eps  # it did move


def test_free_update_from_zero_is_one_full_step():
    threat = Linf(0.1)
    x, _ = _batch(8)
    grad = torch.randn_like(x)
    delta = free_update(threat, torch.zeros_like(x), grad, x)
    torch.testing.assert_close(delta, 0.1 * grad.sign())
    l2 = L2(0.5)
    delta = free_update(l2, torch.zeros_like(x), grad, x)
    torch.testing.assert_close(l2.norm(delta), torch.full((8,), 0.5))


def test_carry_starts_at_zero_and_cuts_or_pads():
    threat = Linf(0.1)
    x = torch.rand(4, 1, 8, 8)
    assert carry_perturbation(threat, None, x).abs().sum() == 0
    prev = torch.full((6, 1, 8, 8), 0.05)
    carried = carry_perturbation(threat, prev, torch.full((4, 1, 8, 8), 0.5))
    torch.testing.assert_close(carried, torch.full((4, 1, 8, 8), 0.05))
    padded = carry_perturbation(threat, prev[:2], torch.full((4, 1, 8, 8), 0.5))
    assert padded[2:].abs().sum() == 0 and padded[:2].abs().min() > 0
