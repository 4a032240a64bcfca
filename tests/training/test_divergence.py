"""TRADES (Zhang et al. 2019) and MART (Wang et al. 2020): the attack stays in the ball and
the box, leaves BatchNorm statistics and parameter gradients alone and raises its own
objective; the update's loss equals the reference formulas written independently (with
torch's KLDivLoss and nll_loss as the reference code does); both train through the CLI for L2
and L-inf; bad options are one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastrobust.cli import main
from fastrobust.training.config import TrainConfig
from fastrobust.training.divergence import kl_per_sample
from fastrobust.training.methods import build_method


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )  # fmt: skip


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


@pytest.mark.parametrize("method", ["trades", "mart"])
@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_attack_obeys_the_threat_model_and_the_bn_contract(method, norm, eps):
    cfg = TrainConfig(method=method, norm=norm, eps=eps)
    m = build_method(cfg.attack)
    assert m.steps == 10 and m.step_size == pytest.approx(eps / 4)
    net, (x, y) = _net(), _batch()
    net.train()
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    x_adv = m.perturb(net, x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-6).all() and size.max() > 0.5 * eps
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())
    assert all(p.grad is None for p in net.parameters()) and net.training


def test_trades_attack_raises_the_kl_divergence():
    m = build_method(TrainConfig(method="trades", norm="linf", eps=0.1).attack)
    net, (x, y) = _net(), _batch()
    net.eval()
    with torch.no_grad():
        clean = net(x).log_softmax(1)
        start = kl_per_sample(clean, net(m.start(x) + x).log_softmax(1)).mean()
        after = kl_per_sample(clean, net(m.perturb(net, x, y)).log_softmax(1)).mean()
    assert after > 10 * start


def _reference_trades(net, x, x_adv, y, beta):
    kl = nn.KLDivLoss(reduction="sum")
    robust = kl(F.log_softmax(net(x_adv), 1), F.softmax(net(x), 1)) / len(x)
    return F.cross_entropy(net(x), y) + beta * robust


def _reference_mart(net, x, x_adv, y, beta):
    adv_probs = F.softmax(net(x_adv), 1)
    top2 = torch.argsort(adv_probs, 1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    loss_adv = F.cross_entropy(net(x_adv), y) + F.nll_loss(
        torch.log(1.0001 - adv_probs + 1e-12), new_y
    )
    nat_probs = F.softmax(net(x), 1)
    true_probs = torch.gather(nat_probs, 1, y[:, None]).squeeze()
    kl = nn.KLDivLoss(reduction="none")(torch.log(adv_probs + 1e-12), nat_probs).sum(1)
    return loss_adv + beta * (kl * (1.0000001 - true_probs)).mean()


@pytest.mark.parametrize(
    "method,reference,beta", [("trades", _reference_trades, 3.0), ("mart", _reference_mart, 5.0)]
)
def test_update_loss_equals_the_reference_formula(method, reference, beta, monkeypatch):
    key = f"{method}_beta"
    m = build_method(TrainConfig(method=method, norm="linf", eps=0.1, **{key: beta}).attack)
    net, (x, y) = _net(), _batch()
    net.eval()  # the same BatchNorm statistics for the one and the two forward passes
    x_adv = m.perturb(net, x, y)
    monkeypatch.setattr(type(m), "perturb", lambda self, model, x, y: x_adv)
    loss, logits = m.loss(net, net, x, y)
    torch.testing.assert_close(loss, reference(net, x, x_adv, y, beta))
    torch.testing.assert_close(logits, net(x_adv))


@pytest.mark.parametrize(
    "method,norm,eps",
    [pytest.param("trades", "linf", "0.1", marks=pytest.mark.slow), ("mart", "l2", "1")],
)
def test_trains_through_the_command_line(method, norm, eps, tmp_path, capsys):
    argv = ["train", "--method", method, "--norm", norm, "--eps", eps, "--steps", "2"]
    argv += ["--out-dir", str(tmp_path), "--name", method, "--epochs", "1", "--no-progress"]
    argv += ["--eval-limit", "30", "--eval-steps", "1", "--overfit-check-size", "0"]
    argv += ["--label-smoothing", "0.1", "--weight-average", "0.99"]
    assert main(argv) == 0, capsys.readouterr().err
    row = json.loads((tmp_path / method / "metrics.jsonl").read_text().splitlines()[0])
    assert row["attack"].startswith(f"{method} 2-step") and row["train_loss"] > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--method", "trades", "--trades-beta", "-1"], "--trades-beta must be >= 0, got -1"),
        (["--method", "mart", "--trades-beta", "1"], "--trades-beta is an option of method trades"),
        (["--weight-average", "1"], "--weight-average must be in [0, 1), got 1"),
    ],
)
def test_bad_options_are_one_line_exit_2(args, message, tmp_path, capsys):
    assert main(["train", "--out-dir", str(tmp_path), "--name", "bad", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "bad").exists()
