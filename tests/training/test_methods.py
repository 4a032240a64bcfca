import pytest
import torch

from fastrobust.errors import ConfigError
from fastrobust.models import ModelSpec, build_model
from fastrobust.training.config import AttackConfig, TrainConfig
from fastrobust.training.methods import (
    METHODS,
    TrainingMethod,
    build_method,
    register_method,
)


def test_registered_methods_are_the_config_choices():
    assert {"standard", "fast", "pgd"} <= set(METHODS)
    with pytest.raises(
        ConfigError, match=r"unknown method 'no-such-method' \(attack.method\); choose one of"
    ):
        TrainConfig(method="no-such-method")


@pytest.mark.parametrize("name", ["standard", "fast", "pgd"])
def test_every_method_keeps_its_perturbation_in_the_threat_model(name):
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", 10, 1, 8))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    attack = AttackConfig(method=name, eps=0.5)
    method = build_method(attack)
    x_adv = method.perturb(model, x, y)
    assert attack.threat().norm(x_adv - x).max() <= 0.5 * (1 + 1e-5)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert torch.equal(x_adv, x) == (not method.perturbs)
    loss, logits = method.loss(model, model, x, y)
    assert loss.ndim == 0 and logits.shape == (16, 10)


def test_a_new_method_is_one_registered_class(tmp_path):
    @register_method("test_noise")
    class Noise(TrainingMethod):
        """Uniform noise of size eps per pixel (a test method, not a defence)."""

        default_steps = 0

        def perturb(self, model, x, y):
            return (x + self.attack.eps * (2 * torch.rand_like(x) - 1)).clamp(0, 1)

    try:
        cfg = TrainConfig(method="test_noise", eps=0.1, norm="linf")
        assert cfg.attack_steps == 0 and isinstance(build_method(cfg.attack), Noise)
        from conftest import tiny_config
        from fastrobust.training.trainer import fit

        result = fit(tiny_config(tmp_path, method="test_noise", eps=0.1, norm="linf", epochs=1))
        assert result.epochs_done == 1 and result.best_metric == "val_adv_acc"
    finally:
        del METHODS["test_noise"]


def test_registering_a_taken_name_warns(caplog):
    original = METHODS["fast"]
    try:
        register_method("fast")(type("Other", (TrainingMethod,), {}))
        assert "registered twice" in caplog.text
    finally:
        register_method("fast")(original)
