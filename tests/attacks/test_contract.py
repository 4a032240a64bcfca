"""The attack contract, checked for every attack (docs/architecture.md, "adding an attack").

One parametrised test over every attack (PGD, FGSM, APGD-CE, APGD-DLR, every attack the
robustness curve runs by name, and the representation tools, which are the same optimiser with a
large eps) x (L2, L-inf) x (BatchNorm mode eval, train). Each must

* stay in the eps ball around its start point and in the ``[0,1]`` box;
* leave the model in the train/eval mode it found it in, with BatchNorm running statistics,
  parameters and parameter gradients untouched;
* be deterministic under a seed;
* with restarts, never be weaker than its first run, per sample: a sample the first run fools
  stays fooled, any other keeps a loss at least as high.

An attack registered with :func:`fastrobust.attacks.spec.register_attack` (every built-in one is,
in :mod:`fastrobust.attacks.registry`) is checked here automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import small_bn_cnn
from fastrobust import L2, Linf, ThreatModel, fgsm, pgd
from fastrobust.attacks.apgd import APGD_LOSSES, apgd
from fastrobust.attacks.contract import (
    attack_mode,
    cross_entropy_per_sample,
    is_fooled,
    pgd_step_size,
)
from fastrobust.attacks.registry import RunSettings, SeededRuns, attack_names
from fastrobust.attacks.restarts import worst_case_over_restarts
from fastrobust.represent import (
    interpolate_representations,
    targeted_perturbation,
    visualize_features,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

STEPS, RESTARTS = 4, 3


@dataclass(frozen=True)
class Case:
    """How to run one attack: ``run(model, x, y, threat, bn_mode, restarts, seed)``.

    Returns ``(x_adv, centre)``: the result and the point its ball is centred on. ``loss`` is the
    objective the attack's restarts compare (None: the attack has no restarts).
    """

    run: Callable[..., tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pgd(model, x, y, threat, bn_mode, restarts, seed):
    step = pgd_step_size(threat.eps, STEPS)
    return pgd(
        model, x, y, threat, steps=STEPS, step_size=step, restarts=restarts, bn_mode=bn_mode,
        generator=_gen(seed),
    ), x  # fmt: skip


def _fgsm(model, x, y, threat, bn_mode, restarts, seed):
    return fgsm(model, x, y, threat, bn_mode=bn_mode, generator=_gen(seed)), x


def _apgd(loss):
    def run(model, x, y, threat, bn_mode, restarts, seed):
        return apgd(
            model, x, y, threat, steps=STEPS, restarts=restarts, loss=loss, bn_mode=bn_mode,
            generator=_gen(seed),
        ), x  # fmt: skip

    return run


def _by_name(name):
    """The curve's path: seeded restarts of a named attack, worst case per sample."""

    def run(model, x, y, threat, bn_mode, restarts, seed):
        settings = RunSettings(STEPS, bn_mode=bn_mode, queries=STEPS, targets=2)
        runs = SeededRuns(name, model, x, y, threat, key=(seed,), settings=settings)
        return x + worst_case_over_restarts(runs, x, restarts).delta, x

    return run


def _features(model, x, y, threat, bn_mode, restarts, seed):
    res = visualize_features(
        model, x, torch.arange(len(x)) % 4, norm=threat.name, eps=threat.eps, steps=STEPS,
        bn_mode=bn_mode,
    )  # fmt: skip
    return res.images, res.starts


def _interpolate(model, x, y, threat, bn_mode, restarts, seed):
    half = len(x) // 2
    res = interpolate_representations(
        model, x[:half], x[half : 2 * half], [0.5], norm=threat.name, eps=threat.eps,
        steps=STEPS, bn_mode=bn_mode, generator=_gen(seed),
    )  # fmt: skip
    return res.images, res.starts


def _targeted(model, x, y, threat, bn_mode, restarts, seed):
    res = targeted_perturbation(
        model, x, (y + 1) % 10, norm=threat.name, eps=threat.eps, steps=STEPS, bn_mode=bn_mode
    )
    return res.images, res.starts


CASES = {
    "pgd": Case(_pgd, cross_entropy_per_sample),
    "fgsm": Case(_fgsm),
    **{f"apgd-{loss}": Case(_apgd(loss), APGD_LOSSES[loss]) for loss in APGD_LOSSES},
    **{
        f"by-name:{name}": Case(_by_name(name), cross_entropy_per_sample) for name in attack_names()
    },
    "features": Case(_features),
    "interpolate": Case(_interpolate),
    "targeted": Case(_targeted),
}


def _state(model: nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in (*model.parameters(), *model.buffers())]


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
@pytest.mark.parametrize("threat", [L2(1.0), Linf(0.1)], ids=["l2", "linf"])
@pytest.mark.parametrize("name", list(CASES))
def test_attack_contract(name: str, threat: ThreatModel, bn_mode: str) -> None:
    case = CASES[name]
    model = small_bn_cnn()
    model.train()  # the attack must put it back in this mode
    modes = [m.training for m in model.modules()]
    before = _state(model)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    x[:4] = x[:4].round()  # pixels on the box boundary
    y = torch.randint(0, 10, (16,), generator=g)

    torch.manual_seed(2)
    x_adv, centre = case.run(model, x, y, threat, bn_mode, 1, seed=3)

    # in the ball around the centre and in the box
    assert threat.contains(x_adv - centre, centre).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # mode, BatchNorm statistics, parameters and their gradients untouched
    assert [m.training for m in model.modules()] == modes
    assert model[1].track_running_stats
    assert all(torch.equal(a, b) for a, b in zip(before, _state(model), strict=True))
    assert all(p.grad is None for p in model.parameters())
    # deterministic under a seed (dropout included when BatchNorm runs in train mode)
    torch.manual_seed(2)
    again, _ = case.run(model, x, y, threat, bn_mode, 1, seed=3)
    assert torch.equal(x_adv, again)
    assert not torch.equal(x_adv, centre)  # it moved

    if case.loss is None or bn_mode == "train":  # no restarts, or random forward passes
        return
    with attack_mode(model, "eval"), torch.no_grad():
        y = model(x).argmax(1)  # all correct, so that some survive the first run
    first, _ = case.run(model, x, y, threat, bn_mode, 1, seed=4)
    worst, _ = case.run(model, x, y, threat, bn_mode, RESTARTS, seed=4)
    assert threat.contains(worst - x, x).all()
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(before, _state(model), strict=True))
    with attack_mode(model, "eval"), torch.no_grad():
        out_first, out_worst = model(first), model(worst)
    fooled_first, fooled_worst = is_fooled(out_first, y), is_fooled(out_worst, y)
    assert (fooled_worst | ~fooled_first).all(), "a restart lost a sample the first run fooled"
    kept = ~fooled_worst
    gain = case.loss(out_worst, y) - case.loss(out_first, y)
    assert (gain[kept] >= -1e-5).all(), "a restart kept a lower loss than the first run"
