"""PGD and FGSM: they attack, the start is explicit, restarts help; the contract's small parts.

The invariants every attack shares (ball, box, model mode, BatchNorm, determinism, restarts) are
checked once for all attacks in ``test_contract.py``.
"""

import pytest
import torch

from conftest import small_bn_cnn
from fastrobust import L2, Linf, fgsm, pgd
from fastrobust.attacks.contract import attack_mode, is_fooled, pgd_step_size
from fastrobust.errors import ConfigError


def _batch(n=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _ce(model, x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("threat", [L2(1.0), Linf(0.1)], ids=repr)
def test_attacks_raise_the_loss(threat):
    model = small_bn_cnn().eval()
    x, y = _batch(128)
    clean = _ce(model, x, y)
    noise = _ce(model, x + threat.sample(x), y)
    one = _ce(model, fgsm(model, x, y, threat), y)
    many = _ce(model, pgd(model, x, y, threat, steps=10, step_size=threat.eps / 4), y)
    assert one > clean + 0.01 and one > noise
    assert many > one


def test_targeted_pgd_lowers_target_loss():
    model = small_bn_cnn().eval()
    x, _ = _batch(64)
    target = torch.full((64,), 3)
    before = _ce(model, x, target)
    x_adv = pgd(model, x, target, L2(2.0), steps=10, step_size=0.5, targeted=True)
    assert _ce(model, x_adv, target) < before - 0.1


def test_the_start_is_explicit():
    model = small_bn_cnn().eval()
    x, y = _batch(8)
    threat = L2(1.0)
    start = threat.sample(x, generator=torch.Generator().manual_seed(0))
    # zero steps return the (projected) start itself
    assert torch.equal(pgd(model, x, y, threat, steps=0, step_size=0.1, start=start), x + start)
    # a random start is the threat model's, drawn from the generator
    from_generator = pgd(
        model, x, y, threat, steps=0, step_size=0.1, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(from_generator, x + start)
    # classic FGSM: start at zero, or a threat model without a random start
    zero = fgsm(model, x, y, threat, start=torch.zeros_like(x))
    assert torch.equal(zero, fgsm(model, x, y, L2(1.0, random_start="none")))
    with pytest.raises(ConfigError, match="does not match"):
        pgd(model, x, y, threat, steps=1, step_size=0.1, start=start[:4])
    with pytest.raises(ConfigError, match="cannot be restarted"):
        pgd(model, x, y, threat, steps=1, step_size=0.1, start=start, restarts=2)


def test_train_bn_mode_uses_batch_statistics():
    model = small_bn_cnn().eval()
    seen = []
    model[1].register_forward_hook(lambda m, i, o: seen.append(m.training))
    x, y = _batch()
    with attack_mode(model, "train"):
        model(x)
    with attack_mode(model, "eval"):
        model(x)
    assert seen == [True, False]
    assert not model.training


def test_any_callable_is_a_model():
    net = small_bn_cnn().eval()
    x, y = _batch(8)

    def model(images):  # a plain function: no mode to set
        return net(images)

    with attack_mode(model, "train"):
        pass
    with pytest.raises(ConfigError, match="bn_mode"):
        with attack_mode(model, "test"):  # type: ignore[arg-type]
            pass
    x_adv = pgd(model, x, y, Linf(0.1), steps=2, step_size=0.05, restarts=2)
    assert Linf(0.1).contains(x_adv - x, x).all()


def test_fooled_and_step_size():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    assert is_fooled(logits, torch.tensor([0, 0])).tolist() == [False, True]
    assert is_fooled(logits, torch.tensor([0, 0]), targeted=True).tolist() == [True, False]
    assert pgd_step_size(1.0, 20) == 2.5 * 1.0 / 20
    assert pgd_step_size(0.5, 10, factor=2.0) == 0.1
    assert pgd_step_size(1.0, 0) == 2.5  # no division by zero for an empty budget


def test_restarts_fool_more_samples_than_one_run():
    model = small_bn_cnn().eval()
    x, _ = _batch(200)
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample starts correctly classified
    threat = L2(0.3)

    def fooled(x_adv):
        return model(x_adv).argmax(1) != y

    torch.manual_seed(0)
    singles = torch.stack(
        [fooled(pgd(model, x, y, threat, steps=2, step_size=0.15)) for _ in range(6)]
    )
    torch.manual_seed(0)
    multi = fooled(pgd(model, x, y, threat, steps=2, step_size=0.15, restarts=6))
    # the same random draws are consumed only by still-robust samples, so compare rates:
    rate_single_best = singles.float().mean(1).max()
    assert 0.05 < rate_single_best < 0.95  # the test is informative: partly robust
    assert multi.float().mean() >= rate_single_best
    assert multi.float().mean() >= singles.any(0).float().mean() - 0.05


def test_pgd_never_computes_parameter_gradients_through_autograd_graph():
    model = small_bn_cnn().eval()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    x, y = _batch()
    pgd(model, x, y, Linf(0.1), steps=2, step_size=0.05)
    assert all(float(p.grad.abs().sum()) == 0 for p in model.parameters())
