"""The shipped Restricted ImageNet paper configs: the paper's recipe, one per training method."""

from pathlib import Path

import pytest

from fastrobust.models import ModelSpec, build_model, count_parameters
from fastrobust.training.config import TrainConfig

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize(
    "name,method,steps",
    [
        ("restricted_imagenet_paper.yaml", "fast", None),
        ("restricted_imagenet_paper_pgd7.yaml", "pgd", 7),
        ("restricted_imagenet_paper_standard.yaml", "standard", None),
    ],
)
def test_restricted_imagenet_paper_configs(name, method, steps):
    cfg = TrainConfig.from_yaml(CONFIGS / name)
    assert (cfg.dataset, cfg.image_size, cfg.model) == (
        "restricted_imagenet",
        224,
        "resnet50_imagenet",
    )
    assert (cfg.method, cfg.steps, cfg.norm, cfg.eps) == (method, steps, "l2", 3.0)
    assert (cfg.weight_decay, cfg.lr, cfg.schedule, cfg.lr_step_epochs, cfg.lr_gamma) == (
        1e-4,
        0.1,
        "step",
        50,
        0.1,
    )
    assert (cfg.epochs, cfg.eval_every, cfg.amp, cfg.channels_last) == (150, 5, "bf16", True)
    assert (cfg.color_jitter, cfg.lighting) == (0.1, 0.05)


def test_the_configured_model_is_the_papers_size():
    cfg = TrainConfig.from_yaml(CONFIGS / "restricted_imagenet_paper.yaml")
    model = build_model(ModelSpec(cfg.model, 9, 3, cfg.image_size))
    assert round(count_parameters(model) / 1e6, 1) == 23.5
