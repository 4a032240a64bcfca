"""fgsm-pgi, nuat, gat, elle, zerograd and n-aaer: their perturbations obey their definitions,
their attacks leave BatchNorm statistics and parameter gradients alone, they resume exactly,
and their option mistakes are one line with exit status 2."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from conftest import interrupt_second_epoch, tiny_config
from fastrobust import load_model, pgd, threat_model
from fastrobust.checkpoint import load_checkpoint
from fastrobust.cli import main
from fastrobust.data import load_dataset, make_loader
from fastrobust.data.base import to_float
from fastrobust.errors import ConfigError
from fastrobust.models import ModelSpec, build_model
from fastrobust.training.config import AttackConfig, TrainConfig
from fastrobust.training.epoch import EpochTrainer
from fastrobust.training.methods import build_method, method_class
from fastrobust.training.methods_feature_prior import last_linear
from fastrobust.training.methods_prior import buffer_bytes
from fastrobust.training.methods_regularised import nuclear_norm, zero_small_components
from fastrobust.training.perturbations import nfgsm_bound
from fastrobust.training.trainer import Trainer, fit, resume

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

METHODS = (
    "fgsm-pgi",
    "fgsm-pco",
    "fgsm-uap",
    "fgsm-cuap",
    "fgsm-fuap",
    "liet",
    "nuat",
    "gat",
    "elle",
    "zerograd",
    "n-aaer",
)
NORMS = {"zerograd": ("linf",), "liet": ("linf",)}
EPS = {"linf": 0.1, "l2": 1.0}
CASES = [(m, n) for m in METHODS for n in NORMS.get(m, ("linf", "l2"))]


class Recorder(nn.Module):
    """The model, recording every batch it is given (what the training forward sees)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.net(x)


def _setup(name, norm, **options):
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 10, 1, 8))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    attack = AttackConfig(method=name, norm=norm, eps=EPS[norm], **options)
    method = build_method(attack)
    method.start_epoch(1, 4)  # nuat: a regulariser weight > 0
    method.start_batch(torch.arange(16), 16)
    return model, x, y, attack, method


@pytest.mark.parametrize("name,norm", CASES)
def test_every_input_the_weights_are_trained_on_is_inside_the_threat_model(name, norm):
    model, x, y, attack, method = _setup(name, norm)
    threat = attack.threat()
    bound = EPS[norm] * (1 + 1e-5)
    if name == "n-aaer":  # noise in a ball noise_factor times eps, one eps step, no projection
        bound = nfgsm_bound(threat, method.noise_factor, EPS[norm]) * (1 + 1e-5)
    if name == "fgsm-pco":  # a convex mix of the prior (eps) and beta times the FGSM one
        bound = method.beta * EPS[norm] * (1 + 1e-5)
    for batch in range(2):  # nuat and gat guide every other batch's attack
        train = Recorder(model)
        loss, logits = method.loss(train, model, x, y)
        assert torch.isfinite(loss) and logits.shape == (16, 10)
        moved = False
        for seen in train.inputs:
            delta = seen - x.repeat(len(seen) // len(x), 1, 1, 1)
            assert float(threat.norm(delta).max()) <= bound + 1e-6, (name, batch)
            assert 0 <= float(seen.min()) and float(seen.max()) <= 1
            moved |= float(threat.norm(delta).max()) > EPS[norm] / 4
        assert moved, name  # it did perturb


@pytest.mark.parametrize("name", [*METHODS, "trades", "mart", "gaussian", "smoothadv"])
def test_label_smoothing_reaches_every_methods_weight_update(name):
    """``--label-smoothing`` is the weight update's loss for every method: the same batch and
    random stream give another loss with it, and the same loss without it."""
    options = {"sigma": 0.25} if name in ("gaussian", "smoothadv") else {}
    losses = []
    for smoothing in (0.0, 0.0, 0.4):
        model, x, y, _, method = _setup(name, "linf", **options)
        method.label_smoothing = smoothing
        losses.append(float(method.loss(model, model, x, y)[0].detach()))
    assert losses[0] == losses[1] and losses[2] != losses[0], name


@pytest.mark.parametrize("name,norm", CASES)
def test_attacks_leave_batchnorm_statistics_and_parameter_gradients_alone(name, norm):
    torch.manual_seed(0)
    model = nn.Sequential(  # a small net with BatchNorm
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )  # fmt: skip
    model[1].running_mean.normal_()  # away from the initial statistics
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    method = build_method(AttackConfig(method=name, norm=norm, eps=EPS[norm]))
    method.start_epoch(1, 4)
    method.start_batch(torch.arange(8), 8)
    before = copy.deepcopy(model.state_dict())
    model.train()
    for _ in range(2):
        method.loss(copy.deepcopy(model), model, x, y)  # the weight update's forward: a copy
        assert model.training and all(m.training for m in model.modules())  # mode restored
        assert all(p.grad is None for p in model.parameters()), name
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), name


def test_the_trained_on_examples_raise_the_loss():
    # nuat / gat / elle / zerograd: their adversarial examples raise the loss over the clean one
    torch.manual_seed(1)
    model = build_model(ModelSpec("small_cnn", 10, 1, 8)).eval()
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        clean = float(ce(model(x), y))
    for name in ("nuat", "gat", "elle", "zerograd"):
        method = build_method(AttackConfig(method=name, norm="linf", eps=0.1))
        x_adv = method.perturb(model, x, y)
        with torch.no_grad():
            assert float(ce(model(x_adv), y)) > clean, name


def test_zerograd_zeroes_the_lower_quantile_as_numpy_does():
    g = torch.randn(5, 3, 4, 4)
    kept = zero_small_components(g, 0.35)
    for row, out in zip(g.flatten(1), kept.flatten(1), strict=True):
        q = np.quantile(row.abs().numpy(), 0.35, method="lower")
        expect = np.where(np.abs(row.numpy()) < q, 0.0, row.numpy())
        np.testing.assert_array_equal(out.numpy(), expect)
    assert 0.3 < float((kept == 0).float().mean()) < 0.4


def test_nuclear_norm_is_the_sum_of_singular_values_as_numpy_computes_it():
    a = torch.randn(16, 10)
    assert float(nuclear_norm(a)) == pytest.approx(np.linalg.norm(a.numpy(), ord="nuc"), 1e-5)


def test_nuat_weight_grows_linearly_and_gat_guides_every_other_batch(monkeypatch):
    nuat = build_method(AttackConfig(method="nuat", norm="linf", eps=0.1, nuat_max=4.0))
    weights = []
    for epoch in range(4):
        nuat.start_epoch(epoch, 4)
        weights.append(nuat.weight)
    assert weights == [0.0, 1.0, 2.0, 3.0]
    model, x, y, _, gat = _setup("gat", "linf")
    calls = []
    monkeypatch.setattr(type(gat), "distance", lambda self, a, b: calls.append(1) or a.sum() * 0)
    for _ in range(4):
        gat.perturb(model, x, y)
    assert len(calls) == 2  # batches 1 and 3 of the epoch


def test_aaer_penalty_follows_its_definition():
    method = build_method(AttackConfig(method="n-aaer", norm="linf", eps=0.1))
    before = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    after = torch.tensor([[0.0, 0.0], [0.0, 3.0], [2.0, 1.0], [1.0, 1.0]])
    loss_before = torch.tensor([2.0, 1.0, 3.0, 0.5])
    loss_after = torch.tensor([1.0, 2.0, 2.5, 0.7])  # rows 0 and 2 abnormal: the loss fell
    var = [1.0, 4.0, 1.0, 2.0]
    drop = ((2.0 - 1.0) + (3.0 - 2.5)) / 2
    excess = max((var[0] + var[2]) / 2 - (var[1] + var[3]) / 2, 0.0)
    want = 1.0 * 2 / 4 * (1.5 * drop + 0.15 * excess)
    assert float(method.penalty(before, loss_before, after, loss_after)) == pytest.approx(want)
    big = torch.tensor([[9.0, 9.0], [0.0, 1.0], [9.0, 9.0], [0.0, 0.0]])
    # variations 162, 4, 113, 2: the abnormal ones' mean exceeds the normal ones' by 134.5,
    # clipped at 100
    got = float(method.penalty(big, loss_before, after, loss_after))
    assert got == pytest.approx(1.0 * 2 / 4 * (1.5 * drop + 0.15 * 100.0))
    none = torch.tensor([0.0, 0.0, 0.0, 0.0])  # no abnormal example: no penalty
    assert float(method.penalty(before, none, after, loss_after)) == 0.0


def test_pgi_starts_each_sample_from_its_stored_prior_and_resets():
    model, x, y, attack, method = _setup("fgsm-pgi", "linf", pgi_reset_every=3)
    threat = attack.threat()
    method.start_epoch(0, 6)
    assert method.fresh
    method.loss(model, model, x, y)
    stored = method.delta.clone()
    assert bool(threat.contains(stored, x).all())
    assert torch.equal(stored.abs().amax((1, 2, 3)) > 0, torch.ones(16, dtype=torch.bool))
    seen = Recorder(model)
    method.start_epoch(1, 6)
    perm = torch.randperm(16)
    method.start_batch(perm, 16)
    method.loss(model, seen, x[perm], y[perm])  # the attack forward starts from the prior
    assert torch.allclose(seen.inputs[0] - x[perm], threat.project(stored[perm], x[perm]))
    method.start_epoch(3, 6)
    assert method.fresh  # every pgi_reset_every epochs: random corners again


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_cuap_moves_each_present_class_perturbation_along_its_momentum(norm):
    model, x, y, attack, method = _setup("fgsm-cuap", norm)
    y = torch.tensor([0, 0, 1, 1] * 4)  # classes 0 and 1 only
    method.loss(model, model, x, y)
    first = method.prior.clone()
    universal = method.universal
    assert first.shape == (10, 1, 8, 8)
    assert torch.allclose(universal.norm(first), torch.full((10,), method.uap_eps))
    seen = Recorder(model)
    method.loss(model, seen, x, y)
    start = seen.inputs[0] - x  # each sample started from its class's perturbation
    assert torch.allclose(start, attack.threat().project(first[y], x), atol=1e-6)
    moved = (method.prior - first).flatten(1).abs().amax(1) > 0
    assert moved[:2].all() and not moved[2:].any()  # only the classes in the batch moved
    assert bool((universal.norm(method.prior) <= method.uap_eps * (1 + 1e-5)).all())
    if norm == "linf":  # the benchmark's default: 10/255 at 8/255
        assert method.uap_eps == pytest.approx(1.25 * 0.1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fuap_starts_from_the_perturbation_its_feature_head_picks(norm):
    model, x, y, attack, method = _setup("fgsm-fuap", norm, fuap_count=6)
    threat = attack.threat()
    method.loss(model, model, x, y)
    assert method.prior.shape == (6, 1, 8, 8) and method.head is not None
    prior, head = method.prior.clone(), copy.deepcopy(method.head)
    seen = Recorder(model)
    method.loss(model, seen, x, y)
    features_at, start_at = seen.inputs[0], seen.inputs[1]
    base = features_at - x  # the random start the features are taken at
    assert bool(threat.contains(base, x).all()) and float(base.abs().max()) > 0
    captured = []
    head_layer = last_linear(model)
    hook = head_layer.register_forward_hook(lambda _m, i, _o: captured.append(i[0].flatten(1)))
    with torch.no_grad():
        model(features_at)
    hook.remove()
    with torch.no_grad():  # the head as it was before this batch picks the perturbations
        chosen = head(captured[0])[0].argmax(1)
    expected = threat.project(base + prior[chosen], x)
    assert torch.allclose(start_at - x, expected, atol=1e-6)
    moved = (method.prior - prior).flatten(1).abs().amax(1) > 0
    assert torch.equal(moved, torch.bincount(chosen, minlength=6) > 0)  # only chosen ones move
    changed = [not torch.equal(a, b) for a, b in zip(head.parameters(), method.head.parameters())]
    assert all(changed)  # the head took its own optimiser step
    assert all(p.grad is None for p in model.parameters())  # the model's weights untouched


def test_fuap_head_learns_to_classify_from_its_scores():
    model, x, y, _, method = _setup("fgsm-fuap", "linf", fuap_count=10, fuap_lr=0.05)
    losses = []
    for _ in range(30):
        method.loss(model, model, x, y)
        losses.append(float(method.head_loss))
    assert losses[-1] < 0.85 * losses[0], losses  # it learns (random labels: slowly)


def test_fuap_refuses_a_model_without_a_linear_head():
    _, x, y, _, method = _setup("fgsm-fuap", "linf")
    conv = nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten())
    with pytest.raises(ConfigError, match="input of its last nn.Linear layer") as caught:
        method.loss(conv, conv, x, y)
    assert caught.value.field == "attack.method"


def test_pco_stores_the_fgsm_perturbation_and_trains_between_prior_and_beta_times_it():
    model, x, y, attack, method = _setup("fgsm-pco", "linf")
    threat = attack.threat()
    method.start_epoch(0, 2)
    method.loss(model, model, x, y)
    prior = method.delta.clone()
    assert bool(threat.contains(prior, x).all()) and method.momentum.numel() == 0
    method.start_epoch(1, 2)
    seen, train = Recorder(model), Recorder(model)
    method.loss(train, seen, x, y)
    start, mixed, fgsm = seen.inputs[0] - x, train.inputs[0] - x, train.inputs[1] - x
    assert torch.allclose(start, threat.project(prior, x))
    assert torch.allclose(fgsm, method.delta, atol=1e-6)  # the next epoch's prior
    with torch.no_grad():
        unsure = 1 - model(x + start).softmax(1).gather(1, y[:, None]).view(-1, 1, 1, 1)
    expect = (x + unsure * start + (1 - unsure) * 1.5 * fgsm).clamp(0, 1) - x
    assert torch.allclose(mixed, expect, atol=1e-5)


def test_liet_starts_from_its_class_start_with_a_share_of_pixels_noise(monkeypatch):
    model, x, y, attack, method = _setup("liet", "linf", liet_mask_min=0.3, liet_mask_max=0.3)
    seen = Recorder(model)
    method.loss(model, seen, x, y)
    classes = method.start_of_class
    assert classes.shape == (10, 1, 8, 8) and torch.equal(
        classes.abs(), torch.full_like(classes, 0.1)
    )
    start = seen.inputs[-1] - x
    threat = attack.threat()
    up, down = threat.project(classes[y], x), threat.project(-classes[y], x)
    same = torch.isclose(start, up, atol=1e-6) | torch.isclose(start, down, atol=1e-6)
    assert 0.6 < float(same.float().mean()) < 0.8  # 30% of the pixels are noise instead
    assert float(attack.threat().norm(start).max()) <= 0.1 + 1e-6


def test_pgi_buffer_limit_and_imagenet_cost():
    assert buffer_bytes(50_000, (3, 32, 32)) == 1_228_800_000  # CIFAR-10: 1.2 GB
    assert buffer_bytes(1_281_167, (3, 224, 224)) / 1e12 == pytest.approx(1.54, abs=0.01)
    options = TrainConfig(method="fgsm-pgi", pgi_buffer_limit_gb=1.0).attack.options
    method = method_class("fgsm-pgi")
    with pytest.raises(ConfigError, match="over attack.pgi_buffer_limit_gb 1") as caught:
        method.check_fits(options, 50_000, (3, 32, 32))
    assert caught.value.field == "attack.pgi_buffer_limit_gb"
    method.check_fits(options, 40_000, (3, 32, 32))  # 0.98 GB fits


def test_in_memory_loader_names_the_samples_of_each_batch(digits):
    loader = make_loader(digits, 100, augment=False)
    loader.set_epoch(2)
    seen = []
    for x, y in loader:
        idx = loader.batch_indices
        assert torch.equal(x, to_float(digits.train_x[idx])) and torch.equal(y, digits.train_y[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(len(digits.train_y)))


@pytest.mark.parametrize(
    "name",
    [
        *("fgsm-pgi", "fgsm-cuap", "fgsm-fuap"),
        *(  # every other method the trainer has, for the same invariant (slow: ~3 s each)
            pytest.param(name, marks=pytest.mark.slow)
            for name in ("nuat", "fgsm-pco", "fgsm-uap", "liet", "gat", "elle", "zerograd")
            + ("n-aaer", "trades", "mart", "pgd", "n-fgsm", "gradalign")
        ),
    ],
)  # fgsm-pgi: epoch 2 starts from the buffers epoch 1 saved; fgsm-cuap: from the per-class
# perturbations; fgsm-fuap: from its perturbations, its feature head and the head's Adam
# state; nuat: its weight schedule
def test_resumed_training_equals_uninterrupted(tmp_path, monkeypatch, name):
    data = load_dataset("digits")
    data = dataclasses.replace(data, train_x=data.train_x[:128], train_y=data.train_y[:128])
    opts = dict(method=name, epochs=2, eval_limit=10, eval_steps=1, overfit_check_size=0)
    opts |= dict(batch_size=32, norm="linf", eps=0.1, eval_every=2)
    full = Trainer(tiny_config(tmp_path, name="full", **opts), dataset=data)
    full.fit()
    original = interrupt_second_epoch(monkeypatch)
    part = Trainer(tiny_config(tmp_path, name="part", **opts), dataset=data).fit()
    assert part.interrupted and part.epochs_done == 1
    monkeypatch.setattr(EpochTrainer, "train_epoch", original)
    resume(part.run_dir, dataset=data)
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "part" / "last.pt")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert _same(a["method_ranks"][0], b["method_ranks"][0])


def _same(a, b) -> bool:
    """Nested method states (tensors, dicts, lists, numbers) equal bitwise."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, z) for x, z in zip(a, b))
    return a == b


FLAGS = ["--epochs", "1", "--no-progress"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--method", "fgsm-pgi", "--pgi-momentum", "2"], "--pgi-momentum must be in [0, 1]"),
        (["--method", "gat", "--nuat-max", "1"], "--nuat-max is an option of method nuat"),
        (["--method", "zerograd", "--norm", "l2"], "method zerograd has no l2 form"),
        (["--method", "fgsm-pgi", "--pgi-buffer-limit-gb", "0"], "--pgi-buffer-limit-gb 0"),
        (["--method", "elle", "--steps", "3"], "method elle takes exactly 1 attack step"),
        (["--method", "liet", "--norm", "l2"], "method liet has no l2 form"),
        (["--method", "liet", "--liet-mask-min", "0.6"], "--liet-mask-min 0.6 is above"),
        (["--method", "fgsm-fuap", "--fuap-count", "0"], "--fuap-count must be >= 1"),
        (
            ["--method", "fgsm-uap", "--fuap-lr", "0.01"],
            "--fuap-lr is an option of method fgsm-fuap",
        ),
    ],
)
def test_option_mistakes_are_one_line_and_exit_2_before_any_work(tmp_path, capsys, argv, message):
    where = ["--out-dir", str(tmp_path), "--name", "bad"]
    assert main(["train", *where, *argv, *FLAGS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "bad").exists()


# -- DDP: two gloo processes -----------------------------------------------------------------------
def _ddp_worker(root: str) -> None:
    import os
    from pathlib import Path

    from fastrobust import distributed

    os.environ[distributed.TIMEOUT_ENV] = "60"
    rank, out = int(os.environ["RANK"]), Path(root)
    data = load_dataset("digits")
    data = dataclasses.replace(data, train_x=data.train_x[:256], train_y=data.train_y[:256])
    for name in ("fgsm-pgi", "fgsm-cuap", "fgsm-fuap"):
        cfg = tiny_config(
            out, name=name, device="cpu", method=name, norm="linf", eps=0.1, epochs=2,
            batch_size=64, eval_limit=10, eval_steps=1, overfit_check_size=0, eval_every=2,
        )  # fmt: skip
        trainer = Trainer(cfg, dataset=data)
        trainer.fit()
        torch.save(trainer.model.state_dict(), out / f"{name}-rank{rank}.pt")


@pytest.mark.slow
def test_buffers_under_ddp_are_merged_and_ranks_stay_identical(tmp_path):
    from fastrobust import distributed

    distributed.launch_local(_ddp_worker, 2, str(tmp_path), threads=1)
    for name in ("fgsm-pgi", "fgsm-cuap", "fgsm-fuap"):
        w0 = torch.load(tmp_path / f"{name}-rank0.pt", weights_only=True)
        w1 = torch.load(tmp_path / f"{name}-rank1.pt", weights_only=True)
        assert all(torch.equal(w0[k], w1[k]) for k in w0), name
    cuap = load_checkpoint(tmp_path / "fgsm-cuap" / "last.pt")["method_ranks"]
    for key in ("prior", "momentum"):  # every rank moved the per-class perturbations alike
        assert cuap[0][key].shape[0] == 10 and torch.equal(cuap[0][key], cuap[1][key]), key
    fuap = load_checkpoint(tmp_path / "fgsm-fuap" / "last.pt")["method_ranks"]
    for key in ("prior", "momentum"):  # the feature head and its perturbations stay alike
        assert torch.equal(fuap[0][key], fuap[1][key]), key
    for k, v in fuap[0]["head"].items():
        assert torch.equal(v, fuap[1]["head"][k]), k
    ranks = load_checkpoint(tmp_path / "fgsm-pgi" / "last.pt")["method_ranks"]
    assert len(ranks) == 2
    for key in ("delta", "momentum"):
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # merged after each epoch
    # every sample's row was written (each by the rank that trained on it): no zero rows
    assert bool((ranks[0]["momentum"].flatten(1).abs().amax(1) > 0).all())


# -- on the digits default: each method is more robust than standard training ---------------------
@pytest.fixture(scope="module")
def standard_run(tmp_path_factory):
    """Standard training on the digits default (30 epochs), validated once at the end."""
    folder = tmp_path_factory.mktemp("std")
    return fit(tiny_config(folder, method="standard", epochs=30, eval_every=30)).run_dir


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_each_method_beats_standard_under_pgd(tmp_path, digits, standard_run, name):
    # the digits default (small CNN, L2 eps 1.0, 30 epochs, attacked at L2 0.5); the L-inf
    # only methods train at L-inf 0.1 and are attacked at that radius
    norm = NORMS.get(name, ("l2",))[0]
    eps, attack_eps = {"l2": (1.0, 0.5), "linf": (0.1, 0.1)}[norm]
    cfg = tiny_config(tmp_path, method=name, norm=norm, eps=eps, epochs=30, eval_every=30)
    run = fit(cfg).run_dir
    x, y = to_float(digits.test_x[:200]), digits.test_y[:200]
    threat = threat_model(norm, attack_eps)
    acc = {}
    for label, folder in (("standard", standard_run), (name, run)):
        model = load_model(folder)
        torch.manual_seed(0)
        x_adv = pgd(model, x, y, threat, steps=10, step_size=2.5 * attack_eps / 10)
        with torch.no_grad():
            acc[label] = float((model(x_adv).argmax(1) == y).float().mean())
            acc[label + "_clean"] = float((model(x).argmax(1) == y).float().mean())
    assert acc[name + "_clean"] > 0.6, acc
    assert acc[name] > acc["standard"] + 0.1, acc
