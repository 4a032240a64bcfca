"""Reading ``.pt`` files without ever unpickling code: ``torch.load(weights_only=True)``.

Both fastrobust's own checkpoints and checkpoints written by other code (MadryLab
``robustness``, torchvision-layout state dicts) are read through :func:`load_tensors_file`, so
a file that carries code is refused with one line instead of being executed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fastrobust.errors import CheckpointError


def load_tensors_file(
    path: str | Path, *, what: str = "checkpoint", map_location: str | torch.device = "cpu"
) -> Any:
    """The tensors and plain values saved in ``path``, or a one-line :class:`CheckpointError`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{what} {p} does not exist")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001  corrupt, truncated or code-carrying file
        text = str(exc).strip()
        if text.startswith("Weights only load failed"):
            msg = "not a PyTorch file of tensors and plain values; code is never unpickled"
        else:
            msg = text.splitlines()[0][:200] if text else type(exc).__name__
        raise CheckpointError(f"{p} is not a readable {what} ({msg})") from None
