import math

import pytest
import torch

from fastrobust import L2, Linf, threat_model
from fastrobust.errors import ConfigError

THREATS = [L2(0.5), L2(0.5, random_start="sphere"), L2(0.5, random_start="radius"), Linf(0.1)]


def _images(n=64, shape=(3, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g)
    x[: n // 4] = x[: n // 4].round()  # many pixels on the box boundary
    return x


@pytest.mark.parametrize("threat", THREATS, ids=repr)
def test_sample_step_project_stay_in_ball_and_box(threat):
    x = _images()
    delta = threat.sample(x)
    assert threat.contains(delta, x).all()
    grad = torch.randn_like(x)
    big = threat.step(delta, grad, alpha=10 * threat.eps)
    assert not threat.contains(big, x).all()  # the unprojected step leaves the ball
    proj = threat.project(big, x)
    assert (threat.norm(proj) <= threat.eps * (1 + 1e-5)).all()
    assert ((x + proj) >= 0).all() and ((x + proj) <= 1).all()


def test_l2_direction_is_per_sample_unit():
    g = torch.randn(5, 3, 4, 4) * torch.tensor([1e-3, 1, 10, 100, 1e4]).view(5, 1, 1, 1)
    d = L2(1.0).direction(g)
    assert torch.allclose(d.flatten(1).norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(d[1], g[1] / g[1].norm(), atol=1e-6)


def test_l2_projection_is_per_sample():
    t = L2(1.0)
    delta = torch.zeros(2, 1, 2, 2)
    delta[0, 0, 0, 0] = 3.0
    delta[1, 0, 0, 0] = 0.5
    p = t.project_ball(delta)
    assert torch.allclose(t.norm(p), torch.tensor([1.0, 0.5]))


def test_l2_ball_start_is_uniform_in_the_ball():
    # uniform in a d-ball <=> (r/eps)^d ~ U(0,1); the 'radius' start is not
    torch.manual_seed(0)
    d = 16
    x = torch.full((20000, 1, 4, 4), 0.5)  # far from the box edges for eps 0.2
    eps = 0.2
    r_ball = L2(eps).norm(L2(eps).sample(x)) / eps
    u = r_ball.pow(d)
    assert abs(float(u.mean()) - 0.5) < 0.01
    assert abs(float((u < 0.25).float().mean()) - 0.25) < 0.015
    r_radius = L2(eps, random_start="radius").norm(L2(eps, random_start="radius").sample(x)) / eps
    assert abs(float(r_radius.mean()) - 0.5) < 0.01  # radius uniform on [0,1]
    r_sphere = L2(eps, random_start="sphere").norm(L2(eps, random_start="sphere").sample(x)) / eps
    assert torch.allclose(r_sphere, torch.ones_like(r_sphere), atol=1e-5)
    # expected radius of a uniform ball is d/(d+1)
    assert abs(float(r_ball.mean()) - d / (d + 1)) < 0.01


def test_linf_start_uniform_in_cube_and_sign_step():
    torch.manual_seed(0)
    x = torch.full((2000, 1, 4, 4), 0.5)
    t = Linf(0.1)
    delta = t.sample(x)
    assert float(delta.abs().max()) <= 0.1
    assert abs(float(delta.mean())) < 0.002
    assert abs(float(delta.abs().mean()) - 0.05) < 0.002
    grad = torch.randn_like(x)
    assert torch.equal(t.step(torch.zeros_like(x), grad, 0.03), 0.03 * grad.sign())


def test_no_random_start_gives_zero():
    x = _images()
    assert torch.equal(L2(1.0, random_start="none").sample(x), torch.zeros_like(x))


@pytest.mark.parametrize(
    "make",
    [
        lambda: L2(-1.0),
        lambda: L2(math.nan),
        lambda: L2(1.0, random_start="cube"),
        lambda: Linf(1.0, random_start="radius"),
        lambda: threat_model("l1", 1.0),
    ],
)
def test_bad_threat_models_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_threat_model_by_name():
    assert isinstance(threat_model("L2", 0.5), L2)
    assert isinstance(threat_model("linf", 0.5).with_eps(0.1), Linf)
    assert threat_model("linf", 0.5).with_eps(0.1).eps == 0.1


@pytest.mark.parametrize("threat", THREATS, ids=repr)
def test_per_row_eps_each_row_obeys_its_own_radius(threat):
    # one batch of (point, eps) pairs: every operation equals the one-eps model's, row by row
    x = _images(n=24)
    eps = torch.tensor([0.0, 0.05, 0.3, 1.0] * 6)
    rows = threat.per_row(eps)
    start = rows.sample(x, generator=torch.Generator().manual_seed(3))
    big = rows.step(start, torch.randn_like(x), alpha=3.0)
    proj = rows.project(big, x)
    for i, e in enumerate(eps.tolist()):
        one = threat.with_eps(e)
        alone = one.sample(x, generator=torch.Generator().manual_seed(3))
        if e > 0:  # eps 0 draws nothing alone
            assert torch.allclose(start[i], alone[i], atol=1e-6), (threat, e)
        assert torch.allclose(proj[i], one.project(big[i : i + 1], x[i : i + 1])[0], atol=1e-6)
    norms = threat.norm(proj)
    assert (norms <= eps * (1 + 1e-5) + 1e-7).all() and ((x + proj) >= 0).all()
    assert ((x + proj) <= 1).all() and rows.contains(proj, x).all()
    assert not rows.contains(big, x).all()  # the unprojected step leaves some rows' balls
    # a larger row's perturbation is outside a smaller row's ball
    swapped = rows.project(proj.flip(0), x)
    assert (threat.norm(swapped) <= eps * (1 + 1e-5) + 1e-7).all()
    assert not rows.contains(proj.flip(0), x).all()


def test_rows_keep_their_radii_and_bad_per_row_eps_raise():
    rows = L2(1.0).per_row(torch.tensor([0.1, 0.2, 0.3]))
    assert torch.equal(rows.rows(torch.tensor([2, 0])).eps, torch.tensor([0.3, 0.1]))
    one = Linf(0.1)
    assert one.rows(torch.tensor([0, 1])) is one  # one number: every row has it
    for bad in (torch.tensor([0.1, -0.1]), torch.tensor([float("nan")]), torch.ones(2, 2)):
        with pytest.raises(ConfigError):
            L2(1.0).per_row(bad) if bad.dim() == 1 else L2(bad)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 224, 224)])
def test_box_diameter_is_the_corner_to_corner_distance_exactly(shape):
    # the longest perturbation inside the box goes from the black image to the white one; its
    # norm must equal math.sqrt(C*H*W) (L2) and 1 (L-inf) exactly: the masking check's "eps
    # covering the whole box" and training's eps limit are written into reports
    d = math.prod(shape)
    black = torch.zeros(1, *shape)
    for threat, expected in ((L2(1.0), math.sqrt(d)), (Linf(0.1), 1.0)):
        assert threat.box_diameter(shape) == expected
        assert threat.box_diameter(torch.Size(shape)) == expected
        white = torch.ones_like(black)
        assert threat.with_eps(expected).contains(white, black).all()  # this ball reaches it
        assert not threat.with_eps(expected * 0.999).contains(white, black).any()  # no smaller
