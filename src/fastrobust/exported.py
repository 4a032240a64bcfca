"""Exported model folders (``fastrobust export``): ``model.safetensors`` + ``config.json``.

The portable form of a model, in the layout the Hugging Face Hub, timm and RobustBench load
from: the weights as safetensors (tensors only: nothing in the file can run code, unlike a
pickle) and a ``config.json`` saying what the model is (architecture, input shape, classes,
normalisation, threat model, training method, fastrobust version). :func:`load_exported`
rebuilds the model from them; :func:`fastrobust.load_model` calls it for such a folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust.errors import CheckpointError
from fastrobust.model_info import ModelInfo, attach_info
from fastrobust.models import ModelSpec, NormalizedModel, build_model
from fastrobust.models.resnet import resnet

#: the files of an exported folder
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: ``config.json``'s format marker and version
EXPORT_FORMAT = "fastrobust-export"
EXPORT_VERSION = 1


def is_exported_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding an exported model."""
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_export_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of an exported folder (checked to be one), or CheckpointError."""
    try:
        doc = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not readable ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{folder} is not a fastrobust export ({CONFIG_FILE}: no format)")
    if doc.get("format_version") != EXPORT_VERSION:
        raise CheckpointError(
            f"{folder} is export format {doc.get('format_version')}, this fastrobust reads "
            f"{EXPORT_VERSION}"
        )
    return doc


def build_exported(doc: dict[str, Any], *, import_factory: bool = False) -> NormalizedModel:
    """The architecture ``config.json`` describes, with fresh weights: a registered model,
    or a ResNet of any width (``resnet``: depth, stem, width; from a foreign checkpoint)."""
    spec = ModelSpec.from_dict(doc["model_spec"])
    shape = doc.get("resnet")
    if shape is None:
        return build_model(spec, import_factory=import_factory)
    net = resnet(
        int(shape["depth"]),
        stem=str(shape["stem"]),
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        width=int(shape["width"]),
    )
    return NormalizedModel(net, spec.mean, spec.std)


def export_info(doc: dict[str, Any]) -> ModelInfo:
    """The :class:`ModelInfo` an exported ``config.json`` records."""
    threat = doc.get("threat_model") or {}
    training = doc.get("training") or {}
    classes = doc.get("classes")
    return ModelInfo(
        spec=ModelSpec.from_dict(doc["model_spec"]),
        classes=tuple(classes) if classes else None,
        dataset=doc.get("dataset"),
        method=training.get("method"),
        norm=threat.get("norm"),
        eps=threat.get("eps"),
        epoch=training.get("epochs"),
    )


def load_exported(
    folder: str | Path, *, device: str | torch.device = "cpu", import_factory: bool = False
) -> nn.Module:
    """An exported folder as an eval-mode model taking ``[0,1]`` images, its metadata
    attached (:func:`fastrobust.model_info.model_info`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder).expanduser()
    doc = read_export_config(path)
    try:
        model = build_exported(doc, import_factory=import_factory)
        weights = load_file(str(path / WEIGHTS_FILE))
    except (KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"{path} is not a readable fastrobust export ({exc})") from None
    own, given = model.state_dict(), set(weights)
    differ = sorted(set(own) ^ given) + [
        k for k in own if k in given and tuple(own[k].shape) != tuple(weights[k].shape)
    ]
    if differ:
        raise CheckpointError(
            f"{path / WEIGHTS_FILE} does not fit the {doc['model_spec']['name']} of its "
            f"{CONFIG_FILE} ({len(differ)} weights differ, e.g. {differ[0]})"
        )
    model.load_state_dict(weights)
    return attach_info(model.to(device).eval(), export_info(doc))
