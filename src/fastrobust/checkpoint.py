"""Checkpoints: atomic writes, loading without unpickling code, and ``load_model``.

A checkpoint is a dict of tensors and plain Python values saved with ``torch.save`` and read
back with ``torch.load(weights_only=True)``: nothing in it can execute code. It records the
model spec (architecture, classes, normalisation), the training config and, for ``last``, the
full resume state (optimiser, scheduler, RNG, epoch, timings).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastrobust.errors import CheckpointError
from fastrobust.model_info import ModelInfo, attach_info
from fastrobust.models import ModelSpec, NormalizedModel, build_model

FORMAT_KEY = "fastrobust_format"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {FORMAT_KEY: FORMAT_VERSION, **state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  corrupt, truncated or code-carrying file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p} is not a readable fastrobust checkpoint ({msg[:200]})"
        ) from None
    if not isinstance(state, dict) or state.get(FORMAT_KEY) != FORMAT_VERSION:
        raise CheckpointError(f"{p} was not written by fastrobust (format marker missing)")
    return state


def model_from_checkpoint(
    state: dict[str, Any], *, net: nn.Module | None = None
) -> NormalizedModel:
    """Rebuild the model recorded in a loaded checkpoint dict and load its weights.

    ``net`` supplies the architecture for runs trained on a Python object (``fit(net=...)``).
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
            model = build_model(spec)
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"checkpoint does not match its recorded model ({exc})") from None
    return model


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu", net: nn.Module | None = None
) -> nn.Module:
    """Load a checkpoint or run folder written by fastrobust as an eval-mode model.

    The returned module takes ``[0,1]`` images; :func:`fastrobust.model_info.model_info` reads
    its recorded metadata (a :class:`~fastrobust.model_info.ModelInfo`: model spec, classes,
    dataset, training method and threat model).
    """
    state = load_checkpoint(path)
    model = model_from_checkpoint(state, net=net).to(device).eval()
    return attach_info(model, ModelInfo.from_checkpoint(state))
