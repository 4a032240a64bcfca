import pytest

from fastrobust.errors import ConfigError
from fastrobust.training.config import TrainConfig


def test_defaults_are_the_offline_fast_l2_job():
    cfg = TrainConfig()
    assert (cfg.dataset, cfg.method, cfg.norm, cfg.eps) == ("digits", "fast", "l2", 1.0)
    assert cfg.attack_steps == 1 and cfg.attack_alpha == pytest.approx(1.5)
    assert cfg.random_start == "ball"


def test_derived_attack_parameters():
    assert TrainConfig(norm="linf", eps=8 / 255).attack_alpha == pytest.approx(1.25 * 8 / 255)
    pgd = TrainConfig(method="pgd", eps=0.5)
    assert pgd.attack_steps == 7 and pgd.attack_alpha == pytest.approx(2.5 * 0.5 / 7)
    assert TrainConfig(method="pgd", steps=3, alpha=0.2).attack_alpha == 0.2
    assert TrainConfig(method="standard").attack_steps == 0


def test_paper_recipe_is_expressible():
    cfg = TrainConfig(
        dataset="cifar10", model="resnet50", lr=0.1, momentum=0.9, weight_decay=5e-4,
        batch_size=256, epochs=150, schedule="step", lr_step_epochs=50, lr_gamma=0.1,
        eval_every=5,
    )  # fmt: skip
    assert cfg.epochs == 150 and cfg.schedule == "step"


def test_yaml_round_trip(tmp_path):
    cfg = TrainConfig(method="pgd", steps=3, eps=0.25)
    cfg.write_yaml(tmp_path / "c.yaml")
    again = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert again == cfg
    assert TrainConfig.from_yaml(tmp_path / "c.yaml", eps=0.5).eps == 0.5


@pytest.mark.parametrize(
    "kw",
    [
        {"epochs": 0},
        {"batch_size": 0},
        {"schedule": "cosine"},
        {"bn_mode": "frozen"},
        {"amp": "int8"},
        {"steps": 0},
        {"eval_limit": 0},
        {"lr": float("nan")},
    ],
)
def test_invalid_values(kw):
    with pytest.raises(ConfigError):
        TrainConfig(**kw)


def test_bad_yaml(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        TrainConfig.from_yaml(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        TrainConfig.from_yaml(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown config keys: epoch"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")


def test_shipped_configs_load():
    from pathlib import Path

    files = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert files
    for f in files:
        cfg = TrainConfig.from_yaml(f)
        assert cfg.dataset == "cifar10" and cfg.epochs == 150 and cfg.batch_size == 256
