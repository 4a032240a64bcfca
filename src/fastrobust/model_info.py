"""What a trained model is, and whether some data fits it.

:class:`ModelInfo` is the typed metadata a checkpoint records (model spec, classes, dataset,
training method and threat model); :func:`fastrobust.load_model` attaches it to the model it
returns and :func:`model_info` reads it back (an empty ``ModelInfo`` for any other module).
:func:`check_model_fits` is the one check, with one wording, that data fits a model: training,
evaluation, visualisation and the command line all call it before doing any work.
See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust.attacks.contract import Model, attack_mode
from fastrobust.data.base import to_float
from fastrobust.errors import DataError
from fastrobust.models import ModelSpec

#: the attribute of a loaded model that holds its :class:`ModelInfo`
INFO_ATTRIBUTE = "fastrobust_info"


@dataclass(frozen=True)
class ModelInfo:
    """What a fastrobust checkpoint records about its model (None: not recorded)."""

    spec: ModelSpec | None = None
    """architecture, input shape, number of classes, normalisation"""
    classes: tuple[str, ...] | None = None
    """class names, in label order"""
    dataset: str | None = None
    """dataset it was trained on"""
    method: str | None = None
    """training method: standard, fast, pgd, ..."""
    norm: str | None = None
    """training threat model's norm"""
    eps: float | None = None
    """training threat model's radius"""
    epoch: int | None = None
    """epochs trained"""
    metrics: dict[str, Any] | None = None
    """last recorded metrics"""
    data_dir: str | None = None
    """folder the model was trained from (absolute), used when no other folder is given"""
    weights: str | None = None
    """which weights were loaded: ema (the run's weight average) or raw (the trained ones)"""

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], *, weights: str = "raw") -> ModelInfo:
        """The metadata of a loaded checkpoint dict whose ``weights`` (ema | raw) were loaded."""
        cfg = state.get("config") or {}
        spec = state.get("model_spec")
        classes = state.get("classes")
        return cls(
            spec=ModelSpec.from_dict(spec) if spec else None,
            classes=tuple(classes) if classes else None,
            dataset=cfg.get("dataset"),
            method=cfg.get("method"),
            norm=cfg.get("norm"),
            eps=cfg.get("eps"),
            epoch=state.get("epoch"),
            metrics=state.get("metrics"),
            data_dir=cfg.get("data_dir"),
            weights=weights,
        )

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """``(C, H, W)`` of the images the model takes."""
        if self.spec is None:
            return None
        return (self.spec.in_channels, self.spec.image_size, self.spec.image_size)

    @property
    def num_classes(self) -> int | None:
        return None if self.spec is None else self.spec.num_classes

    @property
    def adversarially_trained(self) -> bool:
        """Trained against a threat model (any method but standard, with a norm and eps)."""
        return self.method not in (None, "standard") and bool(self.norm) and self.eps is not None

    def describe(self) -> str | None:
        """``"fast l2 eps=1"``, ``"standard"``, or None when nothing is recorded."""
        if self.method is None:
            return None
        if self.adversarially_trained:
            return f"{self.method} {self.norm} eps={self.eps:g}"
        return self.method

    def trained_with(self) -> dict[str, Any]:
        """Method, norm, eps, dataset and the weights loaded (ema | raw; JSON-ready); empty
        for a model without metadata."""
        if self.spec is None:
            return {}
        return {
            "method": self.method,
            "norm": self.norm,
            "eps": self.eps,
            "dataset": self.dataset,
            "weights": self.weights,
        }


def data_dir_for(info: ModelInfo, dataset: str | None, given: str | None) -> str | None:
    """The folder to read ``dataset`` from: ``given`` (``--data-dir``) when set, else the folder
    the model was trained from (when ``dataset`` is the one it was trained on); DataError when
    that recorded folder no longer exists."""
    if given:
        return given
    if not info.data_dir or (dataset is not None and dataset != info.dataset):
        return None
    if not Path(info.data_dir).is_dir():
        raise DataError(
            f"the data folder the model was trained from, {info.data_dir}, no longer exists; "
            "give data_dir",
            field="data_dir",
        )
    return info.data_dir


def model_info(model: Model) -> ModelInfo:
    """The metadata attached to ``model`` by :func:`fastrobust.load_model`, else an empty one."""
    info = getattr(model, INFO_ATTRIBUTE, None)
    return info if isinstance(info, ModelInfo) else ModelInfo()


def attach_info(model: nn.Module, info: ModelInfo) -> nn.Module:
    """Attach ``info`` to ``model`` (read it back with :func:`model_info`); returns ``model``."""
    setattr(model, INFO_ATTRIBUTE, info)
    return model


def model_device(model: Model) -> torch.device:
    """The device of the first parameter (or buffer) of ``model``; CPU for a plain function."""
    if isinstance(model, nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _short(names: Sequence[str]) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= 6 else ", ".join(names[:5]) + f", ... ({len(names)})"


def check_model_fits(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    classes: Sequence[str] | None = None,
    what: str = "the data",
) -> int:
    """Raise DataError unless images ``x`` (labels ``y``, class names ``classes``) fit ``model``.

    Compares with the recorded metadata (input shape, number and names of classes), then runs
    one image through the model in eval mode (mode restored after) and checks that it gives one
    row of logits with room for every label and class. Returns the number of outputs.
    """
    info = model_info(model)
    shape = tuple(int(s) for s in x.shape[1:])
    trained = f" (trained on {info.dataset})" if info.dataset else ""
    if info.image_shape is not None and shape != info.image_shape:
        raise DataError(
            f"{what} of shape {_shape(shape)} do not fit the model: it takes "
            f"{_shape(info.image_shape)} images{trained}"
        )
    if classes is not None and info.num_classes is not None and info.num_classes != len(classes):
        raise DataError(
            f"{what} have {len(classes)} classes, the model has {info.num_classes} classes{trained}"
        )
    if classes is not None and info.classes and list(info.classes) != list(classes):
        raise DataError(
            f"the model was trained on classes {_short(info.classes)}, {what} have "
            f"{_short(classes)}"
        )
    probe = x[:2].to(model_device(model))
    probe = to_float(probe) if probe.dtype == torch.uint8 else probe
    try:
        with attack_mode(model, "eval"), torch.no_grad():
            out = model(probe)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{what} of shape {_shape(shape)} do not fit the model ({first})") from None
    if out.dim() != 2:
        raise DataError(
            f"the model must output one row of logits per sample, got shape {tuple(out.shape)}"
        )
    outputs = int(out.shape[1])
    if classes is not None and outputs != len(classes):
        raise DataError(f"{what} have {len(classes)} classes, the model has {outputs} outputs")
    if y is not None and len(y) and (int(y.max()) >= outputs or int(y.min()) < 0):
        raise DataError(f"labels go up to {int(y.max())} but the model has {outputs} outputs")
    return outputs
