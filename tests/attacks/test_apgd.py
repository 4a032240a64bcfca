"""APGD (Croce & Hein 2020): the published schedule, the DLR loss, invariants, and strength."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import train_mlp
from fastrobust.attacks.apgd import _apgd_run, apgd, apgd_checkpoints, dlr_loss
from fastrobust.attacks.contract import pgd_step_size
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import L2, Linf, threat_model
from fastrobust.checkpoint import load_model
from fastrobust.data.base import to_float
from fastrobust.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def test_checkpoints_follow_the_paper():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j N)
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert apgd_checkpoints(20)[:3] == [4, 7, 9] and apgd_checkpoints(20)[-1] == 20
    assert apgd_checkpoints(1) == [1]


def test_dlr_loss():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [3.0, 1.0, 0.0, -1.0]])
    # correct (y=0): -(3 - 1) / (3 - 0); wrong (y=1): -(1 - 3) / (3 - 0)
    assert torch.allclose(dlr_loss(logits, torch.tensor([0, 1])), torch.tensor([-2 / 3, 2 / 3]))
    # invariant to shifting and scaling the logits
    assert torch.allclose(
        dlr_loss(5 * logits + 7, torch.tensor([0, 1])), torch.tensor([-2 / 3, 2 / 3])
    )
    with pytest.raises(ConfigError, match="3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))


class Flat(nn.Module):
    """Constant logits: the loss never increases, so every checkpoint halves the step size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[2.0, 0.0, -1.0]]).expand(len(x), 3) + 0 * x.flatten(1).sum(
            1, keepdim=True
        )


def test_step_size_halves_at_checkpoints_when_the_loss_stalls():
    steps, eps = 30, 0.5
    x = torch.rand(3, 1, 4, 4)
    trace: list[torch.Tensor] = []
    _apgd_run(
        Flat(), x, torch.zeros(3, dtype=torch.long), L2(eps), torch.zeros_like(x),
        steps=steps, loss_fn=lambda z, y: torch.nn.functional.cross_entropy(z, y, reduction="none"),
        trace=trace,
    )  # fmt: skip
    checks = apgd_checkpoints(steps)
    for k, eta in enumerate(trace):
        halvings = sum(c <= k for c in checks)
        assert torch.allclose(eta, torch.full((3,), 2 * eps / 2**halvings)), k


@pytest.fixture(scope="module")
def mlp(digits) -> nn.Module:
    return train_mlp(digits, hidden=32, batch_norm=True, steps=100)


@pytest.mark.parametrize("threat", [L2(0.7), Linf(0.1)], ids=["l2", "linf"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_invariants(mlp, digits, threat, loss):
    x, y = to_float(digits.test_x[:64]), digits.test_y[:64]
    mlp.train()
    stats = mlp[2].running_mean.clone()
    x_adv = apgd(mlp, x, y, threat, steps=10, restarts=2, loss=loss)
    assert threat.contains(x_adv - x, x).all()
    assert mlp.training and torch.equal(mlp[2].running_mean, stats)
    assert all(p.grad is None for p in mlp.parameters())
    mlp.eval()
    with torch.no_grad():
        adv_acc = (mlp(x_adv).argmax(1) == y).float().mean()
        clean_acc = (mlp(x).argmax(1) == y).float().mean()
    assert adv_acc < clean_acc - 0.2  # it attacks


def test_bad_arguments(mlp):
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    for kw in ({"steps": 0}, {"restarts": 0}, {"loss": "kl"}, {"rho": 0.0}):
        with pytest.raises(ConfigError):
            apgd(mlp, x, y, L2(0.5), **kw)


@pytest.mark.parametrize("eps", [0.5, 1.0])
def test_at_least_as_strong_as_pgd_with_the_same_budget(trained_runs, digits, eps):
    """On the fast-trained (robust) model, APGD-CE and APGD-DLR with PGD's 20 steps and one
    start fool at least as many test points as 20-step PGD (Croce & Hein 2020, Table 2)."""
    model = load_model(trained_runs["fast"])
    x, y = to_float(digits.test_x[:200]), digits.test_y[:200]
    threat = threat_model("l2", eps)

    def robust(x_adv: torch.Tensor) -> int:
        with torch.no_grad():
            return int((model(x_adv).argmax(1) == y).sum())

    torch.manual_seed(0)
    by_pgd = robust(pgd(model, x, y, threat, steps=20, step_size=pgd_step_size(eps, 20)))
    torch.manual_seed(0)
    by_ce = robust(apgd(model, x, y, threat, steps=20, loss="ce"))
    torch.manual_seed(0)
    by_dlr = robust(apgd(model, x, y, threat, steps=20, loss="dlr"))
    assert by_ce <= by_pgd and by_dlr <= by_pgd + 1, (by_pgd, by_ce, by_dlr)


def test_fooled_points_stop_taking_gradients(mlp, digits):
    """A point APGD has fooled is done: later iterations attack the others only, and a run
    whose points are all fooled stops (the standard model at a large eps)."""
    x, y = to_float(digits.test_x[:64]), digits.test_y[:64]
    seen: list[int] = []

    def counted(inputs: torch.Tensor) -> torch.Tensor:
        if inputs.requires_grad:
            seen.append(len(inputs))
        return mlp(inputs)

    steps = 20
    torch.manual_seed(0)
    x_adv = apgd(counted, x, y, L2(3.0), steps=steps)
    with torch.no_grad():
        fooled = (mlp(x_adv).argmax(1) != y).float().mean()
    assert fooled > 0.9
    assert sum(seen) < 0.5 * steps * len(y)  # most points fall within a few steps
    assert seen == sorted(seen, reverse=True)  # the attacked batch only shrinks
