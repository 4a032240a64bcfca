"""The torch floor in pyproject.toml covers the torch APIs the package calls (issue 20, item 9).

Each API below is one the package uses, with the torch release that introduced the form used
(PyTorch release notes); the floor must be at least the newest of them, and each must still be
used (so the table does not outlive the code)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

#: source text -> the torch version that introduced it (the device-type argument forms)
INTRODUCED = {
    "torch.is_autocast_enabled(device": (2, 4),  # is_autocast_enabled(device_type)
    "torch.get_autocast_dtype(": (2, 4),
    "torch.amp.GradScaler(": (2, 3),  # torch.amp.GradScaler("cpu" | "cuda")
    "torch.func.functional_call(": (2, 0),
}


def _floor() -> tuple[int, int]:
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python >= 3.11)
    match = re.search(r'^\s*"torch\s*>=\s*(\d+)\.(\d+)', text, flags=re.MULTILINE)
    assert match, "no torch floor in pyproject.toml"
    return int(match.group(1)), int(match.group(2))


def test_torch_floor_covers_the_apis_used():
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "fastrobust").rglob("*.py"))
    for api, version in INTRODUCED.items():
        assert api in source, f"{api} no longer used: drop it from the table"
        assert _floor() >= version, f"{api} needs torch >= {version}, pyproject says {_floor()}"
    assert tuple(int(v) for v in torch.__version__.split(".")[:2]) >= _floor()
