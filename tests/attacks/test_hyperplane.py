"""ThreatModel.to_hyperplane: FAB's projection, checked against independent solvers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastrobust.attacks.threat import L2, Linf

scipy_optimize = pytest.importorskip("scipy.optimize")


def _problem(n=40, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, dim, generator=g, dtype=torch.float64)
    w = torch.randn(n, dim, generator=g, dtype=torch.float64)
    w[:, 0] = 0  # a coordinate the hyperplane ignores
    b = (w * z).sum(1) + torch.randn(n, generator=g, dtype=torch.float64)
    return z, w, b


@pytest.mark.parametrize("threat", [L2(1.0), Linf(1.0)], ids=["l2", "linf"])
def test_lands_on_the_hyperplane_inside_the_box(threat):
    z, w, b = _problem()
    d = threat.to_hyperplane(z, w, b)
    reachable = (w * torch.where(w * (b - (w * z).sum(1))[:, None] > 0, 1 - z, -z)).sum(1)
    feasible = reachable.abs() >= (b - (w * z).sum(1)).abs()
    assert feasible.sum() > 30
    assert torch.allclose((w * (z + d)).sum(1)[feasible], b[feasible], atol=1e-9)
    assert ((z + d) >= -1e-12).all() and ((z + d) <= 1 + 1e-12).all()
    assert (d[:, 0] == 0).all()


def test_linf_is_the_linear_programs_optimum():
    z, w, b = _problem()
    d = Linf(1.0).to_hyperplane(z, w, b)
    dim = z.shape[1]
    for i in range(len(z)):
        # variables (d, s): minimise s with -s <= d_j <= s, w.d = gap, box bounds on d
        cost = np.r_[np.zeros(dim), 1.0]
        bound_rows = np.block(
            [[np.eye(dim), -np.ones((dim, 1))], [-np.eye(dim), -np.ones((dim, 1))]]
        )
        gap = float(b[i] - (w[i] * z[i]).sum())
        lp = scipy_optimize.linprog(
            cost,
            A_ub=bound_rows,
            b_ub=np.zeros(2 * dim),
            A_eq=np.r_[w[i].numpy(), 0.0][None],
            b_eq=[gap],
            bounds=[(-float(v), 1 - float(v)) for v in z[i]] + [(0, None)],
        )
        if lp.status == 0:
            assert abs(lp.fun - float(d[i].abs().max())) < 1e-7, i


def test_l2_matches_bisection_on_the_kkt_multiplier():
    # the minimiser is d = clip(mu * w', -z, 1 - z) for the mu that reaches the hyperplane
    z, w, b = _problem()
    d = L2(1.0).to_hyperplane(z, w, b)
    for i in range(len(z)):
        gap = float(b[i] - (w[i] * z[i]).sum())
        wi, zi = w[i].numpy() * np.sign(gap), z[i].numpy()

        def progress(mu, wi=wi, zi=zi):
            return float((wi * np.clip(mu * wi, -zi, 1 - zi)).sum())

        lo, hi = 0.0, 1e6
        if progress(hi) < abs(gap):
            continue
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if progress(mid) < abs(gap) else (lo, mid)
        expected = np.clip(hi * wi, -zi, 1 - zi)
        assert np.abs(d[i].numpy() - expected).max() < 1e-8, i


@pytest.mark.parametrize("threat", [L2(1.0), Linf(1.0)], ids=["l2", "linf"])
def test_unreachable_hyperplane_moves_to_the_box_corner(threat):
    z = torch.full((1, 4), 0.5, dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0, 3.0]], dtype=torch.float64)
    d = threat.to_hyperplane(z, w, torch.tensor([100.0], dtype=torch.float64))
    assert torch.allclose(z + d, torch.tensor([[1.0, 0.0, 0.5, 1.0]], dtype=torch.float64))


def test_unconstrained_solutions():
    z = torch.full((1, 3), 0.5, dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 2.0]], dtype=torch.float64)
    b = (w * z).sum(1) + 0.09
    assert torch.allclose(L2(1.0).to_hyperplane(z, w, b), 0.09 * w / 9)
    assert torch.allclose(Linf(1.0).to_hyperplane(z, w, b), 0.09 * w.sign() / 5)
