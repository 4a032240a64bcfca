"""Checkpoints: atomic writes, loading without unpickling code, and ``load_model``.

A checkpoint is a dict of tensors and plain Python values saved with ``torch.save`` and read
back with ``torch.load(weights_only=True)``: nothing in it can execute code. It records the
model spec (architecture, classes, normalisation), the training config and, for ``last``, the
full resume state (optimiser, scheduler, RNG, epoch, timings).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Literal, TypeGuard, cast

import torch
from torch import nn

from fastrobust.errors import CheckpointError, ConfigError
from fastrobust.exported import is_exported_folder, load_exported
from fastrobust.model_info import ModelInfo, attach_info
from fastrobust.models import MODELS, ModelSpec, NormalizedModel, build_model
from fastrobust.models.foreign import DATASET_DEFAULTS, STEM_IMAGE_SIZE, convert, foreign_model
from fastrobust.safe_load import load_tensors_file

log = logging.getLogger(__name__)

FORMAT_KEY = "fastrobust_format"
FORMAT_VERSION = 1
#: which weights of a checkpoint to load: auto (the weight average when the checkpoint holds
#: one, else the raw weights), ema (the average; an error without one), raw (the trained ones)
WEIGHT_CHOICES = ("auto", "ema", "raw")
Weights = Literal["auto", "ema", "raw"]


def chosen_weights(state: dict[str, Any], weights: str = "auto") -> str:
    """``"ema"`` or ``"raw"``: which weights of the loaded checkpoint ``state`` to load."""
    if weights not in WEIGHT_CHOICES:
        raise ConfigError(
            f"weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}", field="weights"
        )
    has_ema = "ema_model" in state
    if weights == "ema" and not has_ema:
        raise CheckpointError(
            "the checkpoint holds no averaged weights (trained without --weight-average); "
            "use weights raw or auto",
            field="weights",
        )
    return "ema" if has_ema and weights != "raw" else "raw"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {FORMAT_KEY: FORMAT_VERSION, **state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _WriteErrors(fh)
            try:
                torch.save(state, cast("IO[bytes]", writer))
            except RuntimeError:
                if writer.error is not None:  # e.g. ENOSPC, which torch reports as a
                    raise writer.error from None  # RuntimeError ("unexpected pos")
                raise
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _WriteErrors:
    """A binary file for ``torch.save`` that keeps the first OSError of a write: torch turns
    it into a RuntimeError without the errno, so a full disk would not read as one."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return int(self.fh.write(data))
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def resolve_checkpoint(path: str | Path, *, prefer: str = "best") -> Path:
    """A checkpoint file from a file path or a run folder (``best.pt`` then ``last.pt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        order = ["best.pt", "last.pt"] if prefer == "best" else ["last.pt", "best.pt"]
        for name in order:
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p} is not a fastrobust run folder (no best.pt or last.pt in it)")
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    return p


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a fastrobust checkpoint safely (``weights_only=True``), or raise CheckpointError."""
    p = resolve_checkpoint(path)
    state = load_tensors_file(p, what="fastrobust checkpoint", map_location=map_location)
    if not is_fastrobust_checkpoint(state):
        raise CheckpointError(f"{p} was not written by fastrobust (format marker missing)")
    return state


def is_fastrobust_checkpoint(state: Any) -> TypeGuard[dict[str, Any]]:
    """Whether a loaded ``.pt`` object carries fastrobust's format marker."""
    return isinstance(state, dict) and state.get(FORMAT_KEY) == FORMAT_VERSION


def registered_model_of(weights: dict[str, Any], spec: ModelSpec) -> str | None:
    """The first registered model whose weights (built for ``spec``'s classes, channels and
    size, on the meta device: no memory, no computation) have exactly these keys and shapes."""
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    for name in MODELS:
        try:
            with torch.device("meta"):
                candidate = build_model(dataclasses.replace(spec, name=name))
        except Exception:  # noqa: BLE001  a model that cannot take this spec is not it
            continue
        if {k: tuple(v.shape) for k, v in candidate.state_dict().items()} == shapes:
            return name
    return None


def load_weights(
    model: nn.Module,
    weights: dict[str, Any],
    *,
    recorded: str,
    asked: str,
    spec: ModelSpec | None = None,
) -> None:
    """``model.load_state_dict(weights)``; on a mismatch, one :class:`CheckpointError` line
    names the model the checkpoint holds and the one it was asked to load into, with counts
    of the keys that differ (the keys themselves are logged at debug level: ``-v``).

    ``recorded``: the model the checkpoint names; ``asked``: the model built to receive the
    weights; ``spec``: lets a weights/spec mismatch name the registered model the weights fit.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    reshaped = [k for k in own if k in weights and tuple(own[k].shape) != tuple(weights[k].shape)]
    differences = {"missing": missing, "unexpected": unexpected, "differently shaped": reshaped}
    if not any(differences.values()):
        model.load_state_dict(weights)
        return
    for label, keys in differences.items():
        if keys:
            log.debug("%s weights (%d): %s", label, len(keys), ", ".join(keys))
    counts = ", ".join(f"{len(keys)} {label}" for label, keys in differences.items() if keys)
    counts += " weights; -v lists them"
    if recorded != asked:
        raise CheckpointError(
            f"the checkpoint holds a {recorded} model, not the {asked} it was asked to load "
            f"into ({counts})"
        )
    actual = registered_model_of(weights, spec) if spec is not None else None
    if actual is not None:
        raise CheckpointError(
            f"the checkpoint records model {recorded} but holds the weights of a {actual} "
            f"({counts}): the file was altered"
        )
    raise CheckpointError(
        f"the checkpoint's weights do not fit the {recorded} it records ({counts}): the "
        "file was altered or the model's definition changed"
    )


def model_from_checkpoint(
    state: dict[str, Any],
    *,
    net: nn.Module | None = None,
    import_factory: bool = False,
    weights: str = "raw",
) -> NormalizedModel:
    """Rebuild the model recorded in a loaded checkpoint dict and load its weights (``weights``:
    see :func:`chosen_weights`; ``raw`` by default, the trained weights).

    ``net`` supplies the architecture for runs trained on a Python object (``fit(net=...)``).
    Only registered architectures are rebuilt: a ``package.module:factory`` recorded in the
    file is imported only with ``import_factory=True`` (see :func:`~fastrobust.models.build_model`).
    """
    try:
        spec = ModelSpec.from_dict(state["model_spec"])
        if net is not None:
            model = NormalizedModel(net, spec.mean, spec.std)
        elif spec.name.startswith("<object"):
            raise CheckpointError(
                f"this checkpoint was trained on a Python object ({spec.name[1:-1]}); "
                "pass an instance of that architecture: load_model(path, net=...)"
            )
        else:
            model = build_model(spec, import_factory=import_factory)
        asked = spec.name if net is None else type(net).__name__
        key = "ema_model" if chosen_weights(state, weights) == "ema" else "model"
        load_weights(model, state[key], recorded=spec.name, asked=asked, spec=spec)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint does not match its recorded model ({exc})") from None
    return model


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    net: nn.Module | None = None,
    arch: str | None = None,
    dataset: str | None = None,
    import_factory: bool = False,
    weights: Weights = "auto",
) -> nn.Module:
    """Load a checkpoint or run folder as an eval-mode model taking ``[0,1]`` images.

    ``weights``: a checkpoint of a run trained with weight averaging holds the averaged
    weights beside the raw ones; ``auto`` (default) and ``ema`` load the average, ``raw`` the
    trained weights (:func:`chosen_weights`); the model's info records which (``weights``).

    Reads exported folders (``fastrobust export``: ``model.safetensors`` + ``config.json``,
    :mod:`fastrobust.exported`), fastrobust checkpoints and, for evaluating models trained
    elsewhere, ResNet
    checkpoints of MadryLab's ``robustness`` library and torchvision-layout ResNet state dicts
    (:mod:`fastrobust.models.foreign`). For those, ``arch`` (``resnet50``,
    ``resnet50_imagenet``, ...) is checked against the tensors (it is inferred when None) and
    ``dataset`` (``cifar10``, ``restricted_imagenet``, ...) supplies what such files do not
    record: image size, class names, and the normalisation when the file has none. Both are
    ignored for fastrobust checkpoints, which record everything.
    :func:`fastrobust.model_info.model_info` reads the metadata of the returned model.

    Loading never runs code named by the file: a fastrobust checkpoint of a user model
    (``package.module:factory``) needs ``net=`` (an instance of the architecture) or
    ``import_factory=True`` (import and call the factory it names: only for trusted files).
    """
    given = Path(path).expanduser()
    if is_exported_folder(given):  # model.safetensors + config.json (fastrobust export)
        return load_exported(given, device=device, import_factory=import_factory)
    p = resolve_checkpoint(path)
    state = load_tensors_file(p, what="checkpoint")
    if is_fastrobust_checkpoint(state):
        try:
            used = chosen_weights(state, weights)
            model = model_from_checkpoint(
                state, net=net, import_factory=import_factory, weights=used
            )
        except ConfigError as exc:
            raise CheckpointError(f"{p}: {exc}", field=exc.field) from None
        model = model.to(device).eval()
        return attach_info(model, ModelInfo.from_checkpoint(state, weights=used))
    if not isinstance(state, dict):
        raise CheckpointError(f"{p} holds a {type(state).__name__}, not a checkpoint dict")
    try:
        model, info = _foreign_model(state, arch=arch, dataset=dataset)
    except CheckpointError as exc:
        raise CheckpointError(
            f"{p} was not written by fastrobust, and as a robustness or torchvision-layout "
            f"ResNet: {exc}"
        ) from None
    log.info("%s: %s checkpoint read as %s", p, info.spec.name if info.spec else "?", p.name)
    return attach_info(model.to(device).eval(), info)


def _foreign_model(
    state: dict[str, Any], *, arch: str | None, dataset: str | None
) -> tuple[NormalizedModel, ModelInfo]:
    """A robustness / torchvision-layout ResNet checkpoint as a model and its metadata."""
    foreign = convert(state)
    defaults = DATASET_DEFAULTS.get(dataset) if dataset else None
    mean = foreign.mean or (defaults.mean if defaults else None)
    std = foreign.std or (defaults.std if defaults else None)
    model, shape = foreign_model(foreign, arch=arch, mean=mean, std=std)
    size = defaults.image_size if defaults else STEM_IMAGE_SIZE[shape.stem]
    spec = ModelSpec(
        shape.name,
        shape.num_classes,
        shape.in_channels,
        size,
        model.mean.flatten().tolist(),
        model.std.flatten().tolist(),
    )
    classes = defaults.classes if defaults else None
    if classes is not None and len(classes) != shape.num_classes:
        raise CheckpointError(
            f"the checkpoint's {shape.name} has {shape.num_classes} outputs, "
            f"{dataset} has {len(classes)} classes"
        )
    return model, ModelInfo(spec=spec, classes=classes, dataset=dataset)
