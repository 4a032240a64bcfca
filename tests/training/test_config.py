import pytest

from fastrobust.errors import ConfigError
from fastrobust.training.config import SCHEMA_VERSION, TrainConfig


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

    configs = Path(__file__).parents[2] / "configs"
    files = sorted(f for f in configs.glob("*.yaml") if not f.name.startswith(("study_", "bench_")))
    assert files
    for f in files:
        cfg = TrainConfig.from_yaml(f)
        assert cfg.dataset in ("cifar10", "restricted_imagenet"), f
        # the paper's recipes: 150 epochs; Cohen et al.'s smoothing recipe: 90 (issue 23)
        epochs = 90 if f.name.startswith("cifar10_cohen_") else 150
        assert cfg.epochs == epochs and cfg.batch_size == 256, f


def test_sections_and_flat_names_are_the_same_fields():
    from fastrobust.training.config import AttackConfig, OptimisationConfig

    by_section = TrainConfig(
        attack=AttackConfig(eps=0.5), optimisation=OptimisationConfig(epochs=3)
    )
    flat = TrainConfig(eps=0.5, epochs=3)
    assert by_section == flat
    assert flat.attack.eps == flat.eps == 0.5 and flat.optimisation.epochs == 3
    flat.eps = 0.25  # a flat write lands in the section, it does not shadow it
    assert flat.attack.eps == 0.25 and "eps" not in vars(flat)
    mixed = TrainConfig(attack=AttackConfig(eps=0.5, norm="linf"), eps=0.1)
    assert (mixed.norm, mixed.eps) == ("linf", 0.1)  # flat names win over the section


def test_unknown_flat_keyword_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown config keys: epoch"):
        TrainConfig(epoch=3)


def test_sectioned_yaml_is_written_and_flat_yaml_still_loads(tmp_path):
    import yaml

    cfg = TrainConfig(method="pgd", steps=3, eps=0.25, seed=4)
    cfg.write_yaml(tmp_path / "c.yaml")
    written = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert list(written) == [
        "schema_version", "data", "attack", "optimisation", "evaluation", "runtime", "resolved"
    ]  # fmt: skip
    assert written["schema_version"] == SCHEMA_VERSION
    assert written["attack"]["eps"] == 0.25 and written["runtime"]["seed"] == 4
    flat = tmp_path / "flat.yaml"
    flat.write_text("method: pgd\nsteps: 3\neps: 0.25\nseed: 4\n")
    assert TrainConfig.from_yaml(flat) == cfg
    assert TrainConfig.from_dict(cfg.to_flat_dict()) == cfg


def test_key_in_the_wrong_section_is_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  eps: 0.5\n")
    with pytest.raises(ConfigError, match="unknown config keys: data.eps"):
        TrainConfig.from_yaml(tmp_path / "c.yaml")


def test_config_recorded_in_a_pre_redesign_checkpoint_loads():
    from pathlib import Path

    from fastrobust.checkpoint import load_checkpoint

    state = load_checkpoint(Path(__file__).parents[1] / "fixtures" / "pre_redesign_best.pt")
    assert "eps" in state["config"]  # written flat, before config sections existed
    cfg = TrainConfig.from_dict(state["config"])
    assert (cfg.attack.method, cfg.attack.norm, cfg.attack.eps) == ("fast", "l2", 1.0)
    assert cfg.optimisation.epochs == 8 and cfg.runtime.seed == 0
