"""Study config: YAML in, every mistake a one-line error before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from fastrobust.errors import ConfigError, DataError
from fastrobust.study.config import STAGES, StudyConfig, check_stage, parse_judge, parse_method


def test_defaults_compare_the_papers_three_methods():
    cfg = StudyConfig()
    assert [m.label for m in cfg.methods] == ["standard", "fast", "pgd-7"]
    pgd = cfg.train_config(cfg.method("pgd-7"), out_dir="x")
    assert (pgd.method, pgd.attack_steps) == ("pgd", 7)
    assert cfg.train_config(cfg.method("fast"), out_dir="x").attack_steps == 1
    assert cfg.eps in cfg.evaluation.eps


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        "dataset: digits\neps: 0.5\nmethods: [standard, {label: slow, method: pgd, steps: 3}]\n"
        "training: {epochs: 2, batch_size: 64}\nevaluation: {eps: [0, 1], restarts: 2}\n"
    )
    cfg = StudyConfig.from_yaml(path)
    assert cfg.evaluation.eps == [0, 0.5, 1]  # the training eps is always evaluated
    run = cfg.train_config(cfg.method("slow"), out_dir=tmp_path)
    assert (run.method, run.steps, run.epochs, run.batch_size, run.eps) == ("pgd", 3, 2, 64, 0.5)
    cfg.write_yaml(tmp_path / "again.yaml")
    again = StudyConfig.from_yaml(tmp_path / "again.yaml")
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"methods": ["magic"]}, "unknown method 'magic'"),
        ({"stages": ["train", "paint"]}, "unknown stage 'paint'"),
        ({"figures": {"tools": ["dream"]}}, "unknown figure 'dream'"),
        ({"figures": {"nodes": 0}}, "figures.nodes must be >= 1, got 0"),
        ({"figures": {"start": "middle"}}, "figures.start: expected one of 'noise'"),
        ({"alignment": {"judges": ["knn-0"]}}, "k must be an integer"),
        ({"evaluation": {"steps": "many"}}, "evaluation.steps: expected an integer"),
        ({"evaluation": {"checkpoint": "first"}}, "one of 'best', 'last'"),
        ({"training": {"eps": 3}}, "set by the study"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"timing": {"repeats": 0}}, "timing.repeats must be >= 1, got 0"),
        ({"timing": {"batch_sizes": []}}, "timing.batch_sizes must list at least one value"),
        ({"timing": {"model": "resnet18"}}, "timing.model is set by the study"),
        ({"methods": ["fast", "fast"]}, "listed twice"),
        ({"methods": [{"steps": 3}]}, "'method' key"),
    ],
)
def test_bad_config_is_one_clear_line(data, message):
    with pytest.raises(ConfigError) as err:
        StudyConfig.from_dict(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        StudyConfig(dataset="cifar10", data_dir=str(tmp_path / "nowhere"))


def test_bad_yaml_file(tmp_path):
    (tmp_path / "s.yaml").write_text("methods: [a\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        StudyConfig.from_yaml(tmp_path / "s.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        StudyConfig.from_yaml(tmp_path / "none.yaml")


def test_names():
    assert [check_stage(s) for s in STAGES] == list(STAGES)
    assert parse_judge("knn") == ("knn", 5) and parse_judge("knn-3") == ("knn", 3)
    assert parse_judge("mlp") == ("model", "mlp")
    assert parse_method("pgd-10", 0).settings == {"method": "pgd", "steps": 10}
    assert parse_method("n-fgsm", 0).settings == {"method": "n-fgsm"}  # a hyphenated name


def test_defaults_survive_a_config_without_training():
    assert StudyConfig.from_dict({"eps": 0.5}).training == StudyConfig().training


@pytest.mark.parametrize("name", ["study_cifar10_paper", "study_restricted_imagenet_paper"])
def test_paper_study_configs_load(name, tmp_path):
    path = Path(__file__).parents[2] / "configs" / f"{name}.yaml"
    cfg = StudyConfig.from_yaml(path, data_dir=str(tmp_path))
    assert [m.label for m in cfg.methods] == ["standard", "fast", "pgd-7"]
    run = cfg.train_config(cfg.method("pgd-7"), out_dir=tmp_path)
    assert (run.epochs, run.batch_size, run.attack_steps, run.eps) == (150, 256, 7, cfg.eps)
    assert cfg.model not in cfg.alignment.judges  # an independent judge


def test_figures_section_is_the_visualisation_settings():
    """The study's figures section takes every option of ``visualize features`` and
    ``interpolate`` with their defaults (written once, in fastrobust.figure_settings)."""
    from fastrobust.figure_settings import FeatureSettings, InterpolationSettings

    section = StudyConfig.from_dict({"figures": {"lambdas": [0.5], "num_seeds": 2}}).figures
    assert isinstance(section, FeatureSettings) and isinstance(section, InterpolationSettings)
    assert (section.lambdas, section.num_seeds) == ([0.5], 2)
    assert (
        section.nodes == FeatureSettings().nodes and section.pairs == InterpolationSettings().pairs
    )
