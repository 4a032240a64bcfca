"""gaussian and smoothadv (Cohen et al. 2019; Salman et al. 2019) as training methods."""

import pytest
import torch

from fastrobust.attacks.smoothed import MonteCarloSoftClassifier, gaussian_noise, smoothed_pgd
from fastrobust.attacks.threat import L2
from fastrobust.errors import ConfigError
from fastrobust.models import ModelSpec, build_model
from fastrobust.training.config import AttackConfig
from fastrobust.training.methods import build_method


def _model_and_batch():
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 10, 1, 8))
    return model.eval(), torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))


def test_gaussian_trains_on_unclamped_noise_of_the_given_sigma():
    model, x, y = _model_and_batch()
    method = build_method(AttackConfig(method="gaussian", sigma=0.5))
    torch.manual_seed(1)
    noise = torch.cat([method.perturb(model, x, y) - x for _ in range(40)])
    assert noise.std().item() == pytest.approx(0.5, rel=0.03)
    assert abs(noise.mean().item()) < 0.01 and (x + noise[:16]).min() < 0  # not clamped


def test_the_soft_classifier_averages_probabilities_over_the_draws():
    model, x, _ = _model_and_batch()
    noise = gaussian_noise(x, 0.25, 3, torch.Generator().manual_seed(0))
    soft = MonteCarloSoftClassifier(model, noise)(x)
    by_hand = torch.stack([torch.softmax(model(x + n), 1) for n in noise]).mean(0)
    assert torch.allclose(soft.exp(), by_hand, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 3])
def test_smoothadv_attack_stays_in_the_ball_and_box_and_raises_the_smoothed_loss(steps):
    model, x, y = _model_and_batch()
    threat = L2(1.0)
    noise = gaussian_noise(x, 0.25, 4, torch.Generator().manual_seed(0))
    x_adv = smoothed_pgd(
        model, x, y, threat, sigma=0.25, samples=4, steps=steps, step_size=0.75, noise=noise
    )
    assert threat.contains(x_adv - x, x).all()
    soft = MonteCarloSoftClassifier(model, noise)
    loss = lambda z: torch.nn.functional.cross_entropy(soft(z), y).item()  # noqa: E731
    assert loss(x_adv) > loss(x)


def test_smoothadv_loss_trains_on_every_noisy_copy_and_reports_one_row_per_image():
    model, x, y = _model_and_batch()
    method = build_method(AttackConfig(method="smoothadv", sigma=0.25, noise_samples=3, eps=0.5))
    assert method.steps == 1 and method.step_size == pytest.approx(0.75)  # fast: 1.5 eps
    loss, logits = method.loss(model, model, x, y)
    assert loss.ndim == 0 and torch.isfinite(loss) and logits.shape == (16, 10)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    seven = build_method(AttackConfig(method="smoothadv", steps=7, eps=0.5))
    assert seven.step_size == pytest.approx(2.5 * 0.5 / 7)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(method="gaussian", sigma=0.0), "attack.sigma"),
        (dict(method="smoothadv", noise_samples=0), "attack.noise_samples"),
        (dict(method="gaussian", steps=2), "attack.steps"),
        (dict(method="fast", sigma=0.5), "attack.sigma"),
    ],
)
def test_bad_options_are_one_config_error_naming_the_field(kw, field):
    with pytest.raises(ConfigError) as info:
        AttackConfig(**kw)
    assert info.value.field == field


@pytest.mark.parametrize("name", ["gaussian", "smoothadv"])
def test_under_bf16_autocast_the_update_is_finite_and_matches_fp32(name):
    """--amp bf16: the loss and every weight gradient are finite and close to fp32's (the same
    noise: the generator is reseeded), so mixed precision neither breaks nor silently changes
    these methods."""
    grads = {}
    for amp in (False, True):
        model, x, y = _model_and_batch()
        method = build_method(AttackConfig(method=name, sigma=0.25, eps=0.5))
        torch.manual_seed(2)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss, _ = method.loss(model, model, x, y)
        assert torch.isfinite(loss), (name, amp)
        loss.backward()
        grads[amp] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert torch.isfinite(grads[True]).all()
    cosine = torch.nn.functional.cosine_similarity(grads[True], grads[False], dim=0)
    assert cosine > 0.9, (name, float(cosine))
