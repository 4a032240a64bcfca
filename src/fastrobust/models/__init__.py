"""Model registry (name -> constructor) and architectures; normalisation lives inside the model."""

from fastrobust.models.registry import (
    MODELS,
    ModelSpec,
    NormalizedModel,
    build_model,
    count_parameters,
    register_model,
)

# importing the architectures registers them
from fastrobust.models import small_cnn, resnet, wide_resnet  # noqa: E402,F401  isort: skip

__all__ = [
    "MODELS",
    "ModelSpec",
    "NormalizedModel",
    "build_model",
    "count_parameters",
    "register_model",
]
