"""CERTIFY and PREDICT (Cohen et al. 2019) on models whose smoothed classifier is known exactly,
the smoothed-attack upper bound (Salman et al. 2019) on trained models, reproducibility, the
checks before any sampling, and sharding over 2 real gloo processes."""

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import train_mlp
from fastrobust import distributed
from fastrobust.data.base import to_float
from fastrobust.errors import ConfigError, DataError
from fastrobust.smoothing import CertifySettings, Smoothing, certify_model, certify_points
from fastrobust.smoothing import core as smoothing_core
from fastrobust.smoothing.core import ABSTAIN, predict_points

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mlp(digits) -> nn.Module:
    """conftest's MLP: accurate on digits, trained without noise."""
    return train_mlp(digits)


class Halfspace(nn.Module):
    """Two classes split by the hyperplane ``w.x + b = 0``: the smoothed classifier's top-class
    probability is ``Phi(|w.x + b| / (sigma ||w||))``, its exact robust radius the distance."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([z, -z], 1)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.w + self.b).abs() / self.w.norm()


def _halfspace_points(n: int = 12):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, generator=g)
    model = Halfspace(w, b=-float(w.sum()) / 2)  # boundary through the grey image
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[0] = 0.5  # on the boundary: p_A = 1/2 exactly
    side = (model(x).argmax(1)).long()
    return model, x, side


def test_certified_radius_never_exceeds_the_true_one_and_on_the_boundary_it_abstains():
    model, x, side = _halfspace_points()
    s = Smoothing(sigma=0.3, n0=50, n=4000, alpha=1e-6, batch_size=1000)
    cert = certify_points(model, x, side, s)
    true = model.distance(x)
    assert cert.predictions[0] == ABSTAIN and cert.radii[0] is None
    certified = [i for i, r in enumerate(cert.radii) if r is not None]
    assert len(certified) >= len(x) // 2  # the far points are certified
    for i in certified:
        assert cert.predictions[i] == int(side[i])  # never the wrong side
        assert cert.radii[i] <= float(true[i]) + 1e-9, (i, cert.radii[i], float(true[i]))
    # with n draws the bound is close to the truth for far points: a good share of it
    far = [i for i in certified if float(true[i]) < 0.9]
    assert all(cert.radii[i] > 0.5 * float(true[i]) for i in far)


def test_a_constant_classifier_gets_sigma_times_the_quantile_of_alpha_to_the_one_over_n():
    stats = pytest.importorskip("scipy.stats")

    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, 3.0, -1.0]]).expand(len(x), 3)

    s = Smoothing(sigma=0.5, n0=10, n=300, alpha=0.01, batch_size=128)
    cert = certify_points(Constant(), torch.rand(2, 1, 4, 4), torch.tensor([1, 0]), s)
    expected = 0.5 * stats.norm.ppf(0.01 ** (1 / 300))
    assert cert.radii == [pytest.approx(expected, abs=1e-9)] * 2
    assert cert.predictions == [1, 1] and cert.certified_accuracy(0.0) == 0.5


def test_predict_abstains_on_a_tie_and_answers_far_from_it():
    model, x, side = _halfspace_points(6)
    s = Smoothing(sigma=0.3, n0=1, n=2000, alpha=0.001, batch_size=500)
    pred = predict_points(model, x, s)
    assert pred[0] == ABSTAIN  # at p_A = 1/2 PREDICT abstains unless the test errs (< alpha)
    dist = model.distance(x)
    assert all(p == int(side[i]) for i, p in enumerate(pred) if float(dist[i]) > 0.5)


def test_the_same_seed_gives_the_same_certificates_and_another_seed_other_draws():
    model, x, side = _halfspace_points(5)
    run = lambda seed: certify_points(  # noqa: E731
        model, x, side, Smoothing(0.3, 20, 500, 0.001, 200, seed=seed)
    )
    a, b, c = run(3), run(3), run(4)
    assert a.to_dict() == b.to_dict()
    assert a.top_counts != c.top_counts
    # a point's draws are keyed by its index: certified alone at its index, it is the same
    alone = certify_points(
        model, x[3:4], side[3:4], Smoothing(0.3, 20, 500, 0.001, 200, 3), first_index=3
    )
    assert alone.top_counts == a.top_counts[3:4] and alone.radii == a.radii[3:4]


def _noise_trained_mlp(digits, sigma: float = 0.25) -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    x, y = to_float(digits.train_x), digits.train_y
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x + sigma * torch.randn_like(x)), y)
        loss.backward()
        opt.step()
    return net.eval()


SMALL = dict(
    sigma=0.25, n0=50, n=500, batch_size=250, limit=16, check_size=16,
    check_radii=[0.125, 0.25, 0.5], check_steps=5, check_samples=8, check_n=200,
)  # fmt: skip


@pytest.mark.parametrize("trained", ["standard", "gaussian"])
def test_certified_accuracy_never_exceeds_the_smoothed_attacks_and_no_certificate_flips(
    digits, mlp, trained
):
    model = mlp if trained == "standard" else _noise_trained_mlp(digits)
    curve = certify_model(model, digits, CertifySettings(**SMALL))
    check = curve.check
    assert check is not None and check.n == 16
    assert check.passed, check.message
    assert sum(check.flipped) == 0, check.message  # certified at R >= r: the attack fails at r
    assert curve.accuracy[0] > 0.5  # the smoothed models are accurate on clean digits
    assert all(a >= b for a, b in zip(curve.accuracy, curve.accuracy[1:]))


def test_the_check_catches_certificates_that_claim_too_much(digits, mlp, monkeypatch):
    # a broken radius (10x too large) must make certified accuracy exceed the attacked one
    real = smoothing_core.certified_radius
    monkeypatch.setattr(
        smoothing_core,
        "certified_radius",
        lambda p, s: None if real(p, s) is None else 10 * real(p, s),
    )
    curve = certify_model(mlp, digits, CertifySettings(**SMALL))
    assert curve.check is not None and not curve.check.passed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sigma", 0.0),
        ("sigma", -1.0),
        ("alpha", 0.0),
        ("alpha", 1.0),
        ("n0", 600),
        ("batch_size", 501),
    ],
)
def test_bad_settings_are_one_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as info:
        CertifySettings(**{"n": 500, "n0": 50, "batch_size": 100, field: value})
    assert info.value.field == f"certify.{field}"


def test_a_model_that_outputs_probabilities_is_refused_before_any_sampling(
    digits, mlp, monkeypatch
):
    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled")

    monkeypatch.setattr(smoothing_core, "sample_counts", no_sampling)
    probabilities = nn.Sequential(mlp, nn.Softmax(dim=1))
    with pytest.raises(DataError, match="probabilities"):
        certify_model(probabilities, digits, CertifySettings(**SMALL))


# -- sharding: 2 gloo processes ----------------------------------------------------------------
SHARD = dict(SMALL, limit=7, checks=False, n=300, batch_size=128)


def _mlp(state):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    net.load_state_dict(state)
    return net.eval()


def _certify_worker(root: str) -> None:
    from fastrobust.data import load_dataset

    os.environ[distributed.TIMEOUT_ENV] = "60"
    world = distributed.world_info_from_env()
    distributed.init_distributed(world, torch.device("cpu"))
    model = _mlp(torch.load(Path(root) / "mlp.pt", weights_only=True))
    curve = certify_model(model, load_dataset("digits"), CertifySettings(**SHARD), world=world)
    doc = curve.to_dict()
    (Path(root) / f"rank{world.rank}.json").write_text(json.dumps(doc))


@pytest.mark.slow  # two spawned processes: about 40 s on the loaded 2-core machine
def test_sharded_certification_equals_one_process(tmp_path, digits, mlp):
    torch.save(mlp.state_dict(), tmp_path / "mlp.pt")
    distributed.launch_local(_certify_worker, 2, str(tmp_path), threads=1)
    one = certify_model(
        _mlp(torch.load(tmp_path / "mlp.pt", weights_only=True)), digits, CertifySettings(**SHARD)
    ).to_dict()
    for rank in (0, 1):
        doc = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert [s["stop"] - s["start"] for s in doc["shards"]] == [4, 3]
        assert doc["per_point"] == json.loads(json.dumps(one["per_point"]))
        assert doc["certified_accuracy"] == one["certified_accuracy"]
