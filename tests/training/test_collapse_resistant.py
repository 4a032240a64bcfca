"""n-fgsm, gradalign, free and curriculum as training methods through the one engine."""

import json

import pytest
import torch

from conftest import tiny_config
from fastrobust import L2, load_model, pgd
from fastrobust.checkpoint import load_checkpoint
from fastrobust.data.base import to_float
from fastrobust.errors import ConfigError
from fastrobust.models import ModelSpec, build_model
from fastrobust.training.collapse_resistant import CURRICULUM_SCHEDULES
from fastrobust.training.config import AttackConfig, TrainConfig
from fastrobust.training.methods import build_method
from fastrobust.training.perturbations import nfgsm_bound
from fastrobust.training.trainer import Trainer, fit

NEW_METHODS = ("n-fgsm", "gradalign", "free", "curriculum")


def _model_and_batch():
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 10, 1, 8))
    return model, torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.1)])
@pytest.mark.parametrize("name", NEW_METHODS)
def test_every_new_method_gives_a_loss_for_both_norms(name, norm, eps):
    model, x, y = _model_and_batch()
    method = build_method(AttackConfig(method=name, norm=norm, eps=eps))
    loss, logits = method.loss(model, model, x, y)
    assert loss.ndim == 0 and torch.isfinite(loss) and logits.shape == (16, 10)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.1)])
def test_nfgsm_method_obeys_its_bound_not_the_eps_ball(norm, eps):
    model, x, y = _model_and_batch()
    attack = AttackConfig(method="n-fgsm", norm=norm, eps=eps)
    threat = attack.threat()
    delta = build_method(attack).perturb(model, x, y) - x
    method = build_method(attack)
    assert method.noise_factor == {"linf": 2.0, "l2": 1.0}[norm] and attack.attack_alpha == eps
    assert threat.norm(delta).max() <= nfgsm_bound(threat, method.noise_factor, eps) * (1 + 1e-5)
    assert threat.norm(delta).max() > eps * 1.01


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.1)])
def test_free_perturbation_is_updated_by_the_training_backward_and_stays_in_the_ball(norm, eps):
    model, x, y = _model_and_batch()
    attack = AttackConfig(method="free", norm=norm, eps=eps, replays=3)
    method, threat = build_method(attack), attack.threat()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    deltas = []
    for _ in range(3):  # replays of one batch: each backward moves delta
        loss, _ = method.loss(model, model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        deltas.append(method.state_dict()["delta"])
    assert all(threat.contains(d, x).all() for d in deltas)
    assert not torch.equal(deltas[0], deltas[1]) and deltas[0].abs().sum() > 0
    # carried to the next batch (projected for its images)
    x2 = torch.rand(16, 1, 8, 8)
    method.loss(model, model, x2, y)
    assert threat.contains(method.delta.detach(), x2).all()


def test_free_does_replays_updates_per_batch_and_epochs_divided_by_replays(tmp_path):
    free = fit(tiny_config(tmp_path, method="free", replays=2, epochs=4, name="free"))
    standard = fit(tiny_config(tmp_path, method="standard", epochs=4, name="std"))
    assert free.epochs_done == 2 and standard.epochs_done == 4
    free_steps, standard_steps = (
        load_checkpoint(r.run_dir / "last.pt")["scheduler"]["last_epoch"] for r in (free, standard)
    )
    per_epoch = -(-1437 // 128)  # batches per epoch
    assert free_steps == standard_steps == 4 * per_epoch  # same weight updates (passes)


def test_gradalign_adds_its_penalty_to_the_fast_loss():
    model, x, y = _model_and_batch()
    losses = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(1)
        method = build_method(AttackConfig(method="gradalign", eps=1.0, gradalign_lambda=weight))
        losses[weight] = float(method.loss(model, model, x, y)[0].detach())
    torch.manual_seed(1)
    fast = float(
        build_method(AttackConfig(method="fast", eps=1.0)).loss(model, model, x, y)[0].detach()
    )
    assert losses[0.0] == pytest.approx(fast, rel=1e-6)
    assert losses[5.0] > losses[0.0]
    assert build_method(AttackConfig(method="gradalign", norm="linf", eps=8 / 255)).weight == (
        pytest.approx(0.2)
    )


class _CompiledLike(torch.nn.Module):
    """Stands in for a ``torch.compile`` result (which cannot double-backward): it keeps the
    model as ``_orig_mod`` and refuses a second derivative through its own forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self._orig_mod = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            raise RuntimeError("does not currently support double backward")
        return self._orig_mod(x)


def test_gradalign_takes_its_penalty_through_the_uncompiled_model():
    model, x, y = _model_and_batch()
    compiled = _CompiledLike(model)
    torch.manual_seed(1)
    method = build_method(AttackConfig(method="gradalign", eps=1.0, gradalign_lambda=5.0))
    loss, _ = method.loss(compiled, compiled, x, y)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    torch.manual_seed(1)
    assert float(loss) == pytest.approx(float(method.loss(model, model, x, y)[0]), rel=1e-6)


def test_curriculum_schedules():
    def steps_over(schedule, total=5, **kw):
        method = build_method(AttackConfig(method="curriculum", curriculum=schedule, **kw))
        out = []
        for epoch in range(total):
            method.start_epoch(epoch, total)
            out.append(method.adversary.steps)
        return out

    assert steps_over("linear") == [1, 3, 4, 6, 7]
    assert steps_over("linear", steps=3, total=3) == [1, 2, 3]
    assert steps_over("switch", curriculum_switch=0.6) == [1, 1, 1, 7, 7]
    adaptive = build_method(
        AttackConfig(method="curriculum", curriculum="adaptive", curriculum_patience=2)
    )
    for acc in (0.2, 0.4, 0.405, 0.39):  # no improvement for 2 epochs: switch
        adaptive.start_epoch(0, 10)
        assert adaptive.adversary.steps == 1
        adaptive.end_epoch(acc, collapsed=False)
    adaptive.start_epoch(4, 10)
    assert adaptive.adversary.steps == 7
    collapsing = build_method(AttackConfig(method="curriculum", curriculum="adaptive"))
    collapsing.end_epoch(0.0, collapsed=True)
    collapsing.start_epoch(1, 10)
    assert collapsing.adversary.steps == 7
    assert set(CURRICULUM_SCHEDULES) == {"linear", "switch", "adaptive"}


def test_run_folder_records_each_epochs_attack(tmp_path):
    result = fit(
        tiny_config(tmp_path, method="curriculum", curriculum="linear", steps=3, epochs=3, name="c")
    )
    rows = [json.loads(r) for r in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["attack"].split(": ")[1].split("-step")[0] for r in rows] == ["1", "2", "3"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(method="free", replays=0), "replays must be >= 1"),
        (dict(method="gradalign", gradalign_lambda=-1.0), "gradalign_lambda must be >= 0"),
        (
            dict(method="curriculum", curriculum="cosine"),
            "attack.curriculum: expected one of 'linear', 'switch', 'adaptive', got 'cosine'",
        ),
        (dict(method="curriculum", curriculum_switch=1.5), "curriculum_switch must be in"),
        (dict(method="n-fgsm", noise_factor=-1.0), "noise_factor must be >= 0"),
    ],
)
def test_bad_method_settings_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**overrides)


@pytest.fixture(scope="module")
def standard_run(tmp_path_factory):
    """Standard training on the digits default (30 epochs), validated once at the end."""
    folder = tmp_path_factory.mktemp("std")
    return fit(tiny_config(folder, method="standard", epochs=30, eval_every=30)).run_dir


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_METHODS)
def test_each_new_method_beats_standard_under_pgd(tmp_path, digits, standard_run, name):
    # the digits default: small CNN, L2 eps 1.0, 30 epochs (free: 8 epochs of 4 replays)
    run = fit(tiny_config(tmp_path, method=name, epochs=30, eval_every=30, name=name)).run_dir
    x, y = to_float(digits.test_x[:200]), digits.test_y[:200]
    acc = {}
    for label, folder in (("standard", standard_run), (name, run)):
        model = load_model(folder)
        torch.manual_seed(0)
        x_adv = pgd(model, x, y, L2(0.5), steps=10, step_size=0.125)
        acc[label] = float((model(x_adv).argmax(1) == y).float().mean())
        acc[label + "_clean"] = float((model(x).argmax(1) == y).float().mean())
    assert acc[name + "_clean"] > 0.6, acc
    assert acc[name] > acc["standard"] + 0.1, acc


# -- DDP: two gloo processes -----------------------------------------------------------------------
DDP_METHODS = {
    "gradalign": dict(method="gradalign"),  # double backprop through a DDP step
    "free": dict(method="free", replays=2, epochs=2),  # per-rank perturbations
    "curriculum": dict(method="curriculum", curriculum="adaptive", curriculum_patience=1),
}


def _ddp_worker(root: str) -> None:
    import dataclasses
    import os

    from fastrobust import distributed
    from fastrobust.data import load_dataset

    os.environ[distributed.TIMEOUT_ENV] = "60"
    rank, out = int(os.environ["RANK"]), __import__("pathlib").Path(root)
    data = load_dataset("digits")
    data = dataclasses.replace(data, train_x=data.train_x[:512], train_y=data.train_y[:512])
    for name, overrides in DDP_METHODS.items():
        cfg = tiny_config(out, name=name, device="cpu", **{"epochs": 2, **overrides})
        trainer = Trainer(cfg, dataset=data)
        trainer.fit()
        torch.save(trainer.model.state_dict(), out / f"{name}-rank{rank}.pt")


@pytest.mark.slow
def test_new_methods_under_ddp_keep_ranks_identical(tmp_path):
    from fastrobust import distributed

    distributed.launch_local(_ddp_worker, 2, str(tmp_path), threads=1)
    for name in DDP_METHODS:
        w0 = torch.load(tmp_path / f"{name}-rank0.pt", weights_only=True)
        w1 = torch.load(tmp_path / f"{name}-rank1.pt", weights_only=True)
        assert all(torch.equal(w0[k], w1[k]) for k in w0), name
        state = load_checkpoint(tmp_path / name / "last.pt")
        assert len(state["method_ranks"]) == 2, name
    free = load_checkpoint(tmp_path / "free" / "last.pt")["method_ranks"]
    assert not torch.equal(free[0]["delta"], free[1]["delta"])  # each rank its own shard's
    rows = (tmp_path / "free" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1  # 2 epochs of budget, 2 replays: 1 epoch
