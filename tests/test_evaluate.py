"""robustness_curve: same answer as the plain loop, less work, honest checks, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastrobust.attacks.restarts import seeded_starts
from fastrobust.attacks.threat import threat_model
from fastrobust.data.base import to_float
from fastrobust.errors import ConfigError, DataError
from fastrobust.evaluation.curve import (
    check_model_fits,
    parse_eps_list,
    robustness_curve,
    validate_attacks,
    validate_eps_list,
)
from fastrobust.evaluation.report import format_table, write_report

EPS = [0.0, 0.3, 0.6, 1.2]
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def _train_mlp(digits, seed: int = 0) -> nn.Module:
    """A small MLP trained for a second on the digits: accurate, not robust."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    x, y = to_float(digits.train_x), digits.train_y
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def mlp(digits) -> nn.Module:
    return _train_mlp(digits)


@pytest.fixture(scope="module")
def points(digits) -> tuple[torch.Tensor, torch.Tensor]:
    return to_float(digits.test_x[:70]), digits.test_y[:70]


class Counting(nn.Module):
    """Counts the samples of every forward pass that an input gradient goes through."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.attacked = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            self.attacked += x.shape[0]
        return self.net(x)


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
                    loss = F.cross_entropy(model(xg), yb, reduction="none").sum()
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
    curve = robustness_curve(model, (x, y), "l2", EPS, checks=False, **kw)
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
    counted = Counting(mlp)
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
    alone = robustness_curve(mlp, (x, y), "l2", EPS, attacks="pgd", **kw)
    cascade = robustness_curve(mlp, (x, y), "l2", EPS, attacks="pgd,apgd-ce,apgd-dlr", **kw)
    assert not (cascade.robust_mask & ~alone.robust_mask).any()  # pgd part is identical
    assert sum(cascade.robust) < sum(alone.robust)
    j = 2
    by = cascade.fooled_by[j]
    assert by["clean"] + by["smaller_eps"] + by["pgd"] + by["apgd-ce"] + by["apgd-dlr"] == (
        cascade.n - cascade.robust[j]
    )


def test_data_forms_and_limit_agree(mlp, digits):
    kw = dict(steps=3, restarts=2, checks=False)
    a = robustness_curve(mlp, digits, "l2", [0.5, 1.0], limit=50, **kw)
    b = robustness_curve(mlp, (digits.test_x[:50], digits.test_y[:50]), "l2", [0.5, 1.0], **kw)
    c = robustness_curve(
        mlp, (to_float(digits.test_x[:50]), digits.test_y[:50]), "l2", [0.5, 1.0], **kw
    )
    assert torch.equal(a.robust_mask, b.robust_mask) and torch.equal(a.robust_mask, c.robust_mask)
    assert a.subset == "first 50 of 360 test points"
    assert b.subset == "all 50 given points"


def test_eps_zero_is_clean_accuracy_without_attacks(mlp, points):
    counted = Counting(mlp)
    curve = robustness_curve(counted, points, "linf", [0.0], checks=False)
    assert counted.attacked == 0 and curve.attack_gradients == 0
    assert curve.accuracy == [curve.clean_accuracy]


def test_model_state_is_left_alone(digits, points):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    )
    net.train()
    stats = net[2].running_mean.clone()
    robustness_curve(net, points, "l2", [0.5], steps=2, restarts=2, check_size=8)
    assert net.training and net[2].training
    assert torch.equal(net[2].running_mean, stats)
    assert all(p.grad is None for p in net.parameters())


def test_healthy_model_passes_every_check(mlp, points):
    curve = robustness_curve(mlp, points, "l2", EPS, steps=5, restarts=2, check_size=32)
    names = [c.name for c in curve.checks]
    assert names == [
        "logits",
        "deterministic",
        "gradients",
        "noise",
        "monotone_eps",
        "monotone_steps",
        "large_eps",
    ]
    assert curve.warnings == [], curve.warnings


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, ANN205
        return -g


class Lying(nn.Module):
    """Gradients that point the wrong way: the attack walks away from misclassification."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_ReverseGrad.apply(x))


class Quantised(nn.Module):
    """Rounds the input: zero gradients everywhere (a classic masking defence)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


class Noisy(nn.Module):
    """Dropout that stays on at test time: a randomised model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(F.dropout(x, 0.3, training=True))


def _failed(curve) -> set[str]:
    return {c.name for c in curve.checks if not c.passed}


def test_checks_flag_probabilities(mlp, points):
    curve = robustness_curve(
        nn.Sequential(mlp, nn.Softmax(1)), points, "l2", [0.5], steps=3, restarts=1
    )
    assert "logits" in _failed(curve)
    assert any("probabilities" in w for w in curve.warnings)


def test_checks_flag_zero_gradients(mlp, points):
    curve = robustness_curve(Quantised(mlp), points, "l2", [0.5, 1.0], steps=3, restarts=1)
    assert "gradients" in _failed(curve)


def test_checks_flag_misleading_gradients(mlp, points):
    curve = robustness_curve(Lying(mlp), points, "l2", [0.3, 0.6, 1.2], steps=5, restarts=2)
    assert {"noise", "large_eps"} <= _failed(curve)


def test_checks_flag_accuracy_rising_with_steps_or_eps(mlp, points, monkeypatch):
    from fastrobust.evaluation import masking as masking_checks

    def fake(self, idx, threat, steps, key, restarts=1):  # more steps, more robust samples
        return idx.numel() if steps > self.curve.steps or key < 100 else 0

    monkeypatch.setattr(masking_checks._CheckContext, "_attack_robust", fake)
    curve = robustness_curve(mlp, points, "l2", [0.3, 0.6], steps=2, restarts=1, check_size=16)
    assert _failed(curve) == {"monotone_steps", "monotone_eps"}
    assert any("rose with more steps" in w for w in curve.warnings)
    assert any("survived a fresh attack" in w for w in curve.warnings)


def test_checks_flag_randomness(mlp, points):
    curve = robustness_curve(Noisy(mlp), points, "l2", [0.5, 1.0], steps=3, restarts=1)
    assert "deterministic" in _failed(curve)


@pytest.mark.parametrize(
    "eps, message",
    [
        ([], "empty"),
        ([-0.5, 1.0], ">= 0"),
        ([1.0, 0.5], "increasing"),
        ([0.5, 0.5], "increasing"),
        ([float("nan")], "finite"),
    ],
)
def test_bad_eps_lists(eps, message):
    with pytest.raises(ConfigError, match=message):
        validate_eps_list(eps)


def test_eps_parsing():
    assert parse_eps_list("0, 8/255,16/255") == [0.0, 8 / 255, 16 / 255]
    for text in ("", " , ", "a", "1/0"):
        with pytest.raises(ConfigError):
            parse_eps_list(text)


def test_attack_names():
    assert validate_attacks("PGD, apgd-ce") == ["pgd", "apgd-ce"]
    for bad in ("", "fgsm", "pgd,pgd"):
        with pytest.raises(ConfigError):
            validate_attacks(bad)


def test_data_that_does_not_fit_the_model(mlp, points):
    x, y = points
    with pytest.raises(DataError, match="does not accept"):
        check_model_fits(mlp, torch.rand(4, 3, 8, 8), y[:4], None)
    with pytest.raises(DataError, match="labels"):
        check_model_fits(mlp, x[:4], torch.tensor([0, 1, 2, 12]), None)
    mlp_info = nn.Sequential(mlp)
    mlp_info.fastrobust_info = {  # type: ignore[assignment]
        "model_spec": {"in_channels": 1, "image_size": 8, "num_classes": 10},
        "classes": [str(i) for i in range(10)],
        "dataset": "digits",
    }
    with pytest.raises(DataError, match="1x8x8"):
        check_model_fits(mlp_info, torch.rand(4, 1, 16, 16), y[:4], None)
    with pytest.raises(DataError, match="10 classes"):
        check_model_fits(mlp_info, x[:4], y[:4], ["a", "b", "c"])
    with pytest.raises(DataError, match="trained on classes"):
        check_model_fits(mlp_info, x[:4], y[:4], list("abcdefghij"))
    with pytest.raises(DataError):
        robustness_curve(mlp_info, (torch.rand(4, 1, 16, 16), y[:4]), "l2", [0.5], checks=False)


def test_report_files(mlp, digits, tmp_path):
    curves = {
        "mlp": robustness_curve(
            mlp, digits, "l2", [0, 0.5], steps=2, restarts=1, limit=40, check_size=8
        ),
    }
    paths = write_report(tmp_path, curves, extra={"note": "x"})
    doc = json.loads(paths["json"].read_text())
    assert doc["subset"] == "first 40 of 360 test points"
    assert doc["models"]["mlp"]["data"]["limit"] == 40
    assert doc["models"]["mlp"]["accuracy"] == curves["mlp"].accuracy
    assert len(doc["models"]["mlp"]["checks"]) == 7
    rows = paths["csv"].read_text().splitlines()
    assert len(rows) == 3 and all("first 40 of 360" in r for r in rows[1:])
    import matplotlib.image

    assert matplotlib.image.imread(paths["png"]).shape[0] > 100
    table = format_table(curves)
    assert table.splitlines()[0].split() == ["eps", "mlp"] and len(table.splitlines()) == 3
