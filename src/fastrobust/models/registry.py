"""A name -> constructor registry, the ``Normalize`` wrapper and user ``module:factory`` models.

Every model built here takes images in ``[0,1]``: the dataset mean/std are buffers of a
:class:`NormalizedModel` wrapper, so attacks and eps are always in pixel space.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import nn

from fastrobust.errors import ConfigError

log = logging.getLogger(__name__)
#: constructor(num_classes=, in_channels=, image_size=) -> nn.Module (without normalisation)
ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding an architecture constructor to :data:`MODELS` (warns when ``name``
    is already taken: the later constructor replaces the earlier one)."""

    def wrap(fn: ModelFactory) -> ModelFactory:
        if name in MODELS and MODELS[name] is not fn:
            log.warning("model %r registered twice; the later constructor is used", name)
        MODELS[name] = fn
        return fn

    return wrap


class NormalizedModel(nn.Module):
    """``net((x - mean) / std)``: inputs stay ``[0,1]`` images; mean/std are buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype)))


@dataclass
class ModelSpec:
    """Everything needed to rebuild a model from a checkpoint (no code is pickled)."""

    name: str
    """registry name, or ``package.module:factory`` for a user model"""
    num_classes: int
    in_channels: int
    image_size: int
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(
            **{k: d[k] for k in ("name", "num_classes", "in_channels", "image_size", "mean", "std")}
        )


def _import_factory(spec: str) -> ModelFactory:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import model factory {spec!r}: {exc}") from None
    if not callable(factory):
        raise ConfigError(f"model factory {spec!r} is not callable")
    return cast(ModelFactory, factory)


def _accepted_kwargs(factory: ModelFactory, offered: dict[str, int]) -> dict[str, int]:
    """The subset of ``offered`` keyword arguments that ``factory``'s signature takes."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no introspectable signature: offer everything
        return offered
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return offered
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {k: v for k, v in offered.items() if k in names}


def _check_signature(factory: ModelFactory, name: str, kwargs: dict[str, int]) -> None:
    """ConfigError if ``factory`` cannot be called with ``kwargs`` alone (e.g. it requires an
    argument fastrobust does not give): a user's mistake, not a traceback."""
    try:
        inspect.signature(factory).bind(**kwargs)
    except ValueError:  # no introspectable signature: the call itself decides
        return
    except TypeError as exc:
        given = ", ".join(f"{k}=" for k in kwargs) or "no arguments"
        raise ConfigError(
            f"model factory {name!r} cannot be called with {given} ({exc}); it may take "
            "num_classes, in_channels and image_size, and must need nothing else"
        ) from None


def build_model(spec: ModelSpec, *, import_factory: bool = False) -> NormalizedModel:
    """Construct the architecture named in ``spec`` wrapped with its normalisation.

    Registered names only, unless ``import_factory`` is True: a user factory
    (``package.module:factory``) is code, and a spec read from a file must never make
    fastrobust import or call it without the caller saying so (the name alone imports the
    module, which runs it). Callers set ``import_factory`` where the name comes from the
    user's own command or config, never from a checkpoint unless asked.

    The factory is called with those of the keyword arguments ``num_classes``,
    ``in_channels`` and ``image_size`` that its signature takes, and must return an
    ``nn.Module`` mapping images to logits; errors raised inside it propagate.
    """
    offered = {
        "num_classes": spec.num_classes,
        "in_channels": spec.in_channels,
        "image_size": spec.image_size,
    }
    if ":" in spec.name:
        if not import_factory:
            raise ConfigError(
                f"the model {spec.name!r} is a Python factory, which is not imported by "
                "default; set import_factory only if you trust the file, or give the architecture "
                "(load_model(path, net=...))",
                field="import_factory",
            )
        factory = _import_factory(spec.name)
        kwargs = _accepted_kwargs(factory, offered)
        _check_signature(factory, spec.name, kwargs)
        net = factory(**kwargs)
        if not isinstance(net, nn.Module):
            raise ConfigError(f"model factory {spec.name!r} did not return an nn.Module")
    elif spec.name in MODELS:
        net = MODELS[spec.name](**offered)
    else:
        raise ConfigError(
            f"unknown model {spec.name!r}; choose one of {', '.join(sorted(MODELS))} "
            "or give package.module:factory"
        )
    mean = spec.mean or [0.0] * spec.in_channels
    std = spec.std or [1.0] * spec.in_channels
    return NormalizedModel(net, mean, std)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
