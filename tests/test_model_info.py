"""Typed model metadata and the one check that data fits a model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastrobust.checkpoint import load_model
from fastrobust.errors import DataError
from fastrobust.evaluation import CurveSettings
from fastrobust.evaluation.curve import robustness_curve
from fastrobust.model_info import ModelInfo, attach_info, check_model_fits, model_info
from fastrobust.models import ModelSpec


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


DIGITS_INFO = ModelInfo(
    spec=ModelSpec("small_mlp", num_classes=10, in_channels=1, image_size=8),
    classes=tuple(str(i) for i in range(10)),
    dataset="digits",
    method="fast",
    norm="l2",
    eps=1.0,
)


def test_loaded_models_carry_typed_metadata(trained_runs):
    info = model_info(load_model(trained_runs["fast"]))
    assert isinstance(info, ModelInfo)
    assert (info.method, info.norm, info.eps, info.dataset) == ("fast", "l2", 1.0, "digits")
    assert info.image_shape == (1, 8, 8) and info.num_classes == 10
    assert info.classes == tuple(str(i) for i in range(10))
    assert info.describe() == "fast l2 eps=1" and info.adversarially_trained
    assert model_info(load_model(trained_runs["standard"])).describe() == "standard"
    # any other module: nothing recorded
    assert model_info(_mlp()) == ModelInfo() and ModelInfo().trained_with() == {}


def test_data_that_does_not_fit_the_model():
    mlp = _mlp()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    assert check_model_fits(mlp, x, y) == 10
    with pytest.raises(DataError, match="of shape 3x8x8 do not fit the model"):
        check_model_fits(mlp, torch.rand(4, 3, 8, 8), y)
    with pytest.raises(DataError, match="labels go up to 12"):
        check_model_fits(mlp, x, torch.tensor([0, 1, 2, 12]))
    with pytest.raises(DataError, match="3 classes, the model has 10 outputs"):
        check_model_fits(mlp, x, y, classes=["a", "b", "c"])
    with pytest.raises(DataError, match="one row of logits"):
        check_model_fits(nn.Identity(), x, y)

    recorded = attach_info(nn.Sequential(mlp), DIGITS_INFO)
    with pytest.raises(DataError, match="16x16 do not fit the model: it takes 1x8x8 images"):
        check_model_fits(recorded, torch.rand(4, 1, 16, 16), y)
    with pytest.raises(DataError, match="the model has 10 classes"):
        check_model_fits(recorded, x, y, classes=["a", "b", "c"])
    with pytest.raises(DataError, match="trained on classes"):
        check_model_fits(recorded, x, y, classes=list("abcdefghij"))
    with pytest.raises(DataError, match="do not fit the model"):
        robustness_curve(
            recorded, (torch.rand(4, 1, 16, 16), y), "l2", [0.5], CurveSettings(checks=False)
        )


def test_the_fit_check_leaves_the_model_mode_alone():
    mlp = _mlp().train()
    check_model_fits(mlp, torch.rand(2, 1, 8, 8))
    assert mlp.training
