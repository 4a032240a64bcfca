"""What a robustness curve is evaluated on: the eps grid, the attack names and the data.

Parsing and validating the user's inputs to :func:`fastrobust.evaluation.curve.robustness_curve`
(Goodwin et al. 2020, Figure 2) before any attack runs, so a mistake is one clear error.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from fastrobust.attacks.registry import VERSIONS, attack_names, is_attack
from fastrobust.data.base import ImageDataset, to_float
from fastrobust.data.imagefolder import LazyImages
from fastrobust.data.subsets import sample_split
from fastrobust.errors import ConfigError, DataError

Data = ImageDataset | tuple[torch.Tensor, torch.Tensor]
#: rounding slack allowed around [0,1] for float images
UNIT_BOX_SLACK = 1e-6


def as_float_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 images as floats in ``[0,1]``; float images unchanged."""
    return to_float(x) if x.dtype == torch.uint8 else x


def parse_eps_list(text: str, *, field: str | None = None) -> list[float]:
    """``"0,0.25,0.5"`` (fractions such as ``8/255`` allowed) -> validated list of floats.
    ``field`` is the setting's name in the errors (``evaluation.eps``; default ``eps``)."""
    name = field or "eps"
    values = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            num, _, den = part.partition("/")
            values.append(float(num) / float(den) if den else float(num))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{name} value {part!r} is not a number", field=field) from None
    return validate_eps_list(values, field=field)


def validate_eps_list(eps_list: Sequence[float], *, field: str | None = None) -> list[float]:
    """A non-empty, finite, non-negative, strictly increasing list of floats (else ConfigError
    naming ``field``, default ``eps``)."""
    name = field or "eps"
    if isinstance(eps_list, str | bytes) or not isinstance(eps_list, Iterable):
        hint = " (parse_eps_list reads text such as '0,0.5,1')" if isinstance(eps_list, str) else ""
        raise ConfigError(
            f"{name} must be a list of numbers such as [0, 0.5, 1], got {eps_list!r}{hint}",
            field=field,
        )
    items = [e.item() if isinstance(e, torch.Tensor) and e.numel() == 1 else e for e in eps_list]
    odd = [e for e in items if isinstance(e, bool) or not isinstance(e, numbers.Real)]
    if odd:
        raise ConfigError(f"{name} values must be numbers, got {odd[0]!r}", field=field)
    values = [float(e) for e in items]
    if not values:
        raise ConfigError(f"{name} is empty; give e.g. 0,0.25,0.5,1", field=field)
    bad = [e for e in values if not math.isfinite(e) or e < 0]
    if bad:
        raise ConfigError(f"{name} values must be finite and >= 0, got {bad[0]:g}", field=field)
    for a, b in zip(values, values[1:]):
        if b <= a:
            raise ConfigError(
                f"{name} values must be strictly increasing, got {a:g} before {b:g} "
                f"(e.g. {','.join(f'{e:g}' for e in sorted(set(values)))})",
                field=field,
            )
    return values


def validate_attacks(attacks: str | Sequence[str], *, field: str | None = None) -> list[str]:
    """``"pgd,apgd-ce"`` or a sequence of names -> a list of known, distinct attack names.

    An AutoAttack version (``autoattack``, ``autoattack-rand``) is a whole cascade with its own
    budgets, so it comes alone: ``["autoattack"]``. ``field`` is carried by the errors.
    """
    names = [
        a.strip().lower() for a in (attacks.split(",") if isinstance(attacks, str) else attacks)
    ]
    names = [a for a in names if a]
    known = ", ".join([*attack_names(), *VERSIONS])
    if not names:
        raise ConfigError(f"no attack given; choose from {known}", field=field)
    for name in names:
        if not is_attack(name) and name not in VERSIONS:
            raise ConfigError(f"unknown attack {name!r}; choose from {known}", field=field)
    if len(set(names)) != len(names):
        raise ConfigError(f"attack listed twice in {','.join(names)}", field=field)
    versions = [name for name in names if name in VERSIONS]
    if versions and len(names) > 1:
        raise ConfigError(
            f"{versions[0]} is a whole cascade ({', '.join(VERSIONS[versions[0]][0])}); give it "
            "alone, or list the attacks you want instead",
            field=field,
        )
    return names


def check_unit_box(x: torch.Tensor) -> None:
    """DataError unless float images are finite and in ``[0,1]`` (eps is in pixel units of
    ``[0,1]`` images, and normalisation lives inside the model): 0-255 floats or normalised
    images would give numbers for another threat model, NaN images meaningless ones."""
    if x.numel() == 0:
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise DataError(f"images hold {bad} NaN or infinite value(s); give images in [0,1]")
    low, high = float(x.min()), float(x.max())
    if low < -UNIT_BOX_SLACK or high > 1 + UNIT_BOX_SLACK:
        hint = " (0-255 values? divide by 255)" if high > 1.5 else ""
        raise DataError(
            f"float images must lie in [0,1], got values from {low:.4g} to {high:.4g}{hint}; "
            "normalisation belongs inside the model"
        )


def data_tensors(
    data: Data, limit: int | None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """The evaluation tensors and a description of where they come from. With ``limit``, a
    class-stratified sample of ``limit`` of them drawn from ``seed``
    (:func:`~fastrobust.data.subsets.stratified_subset`); the description then holds it.
    Images on disk come back as a :class:`LazyImages`, nothing decoded."""
    if isinstance(data, ImageDataset):
        x, y = data.test_x, data.test_y
        info: dict[str, Any] = {
            "dataset": data.name,
            "split": "test",
            "classes": list(data.classes),
        }
    elif isinstance(data, tuple | list) and len(data) == 2:
        x, y = data
        info = {"dataset": None, "split": "given", "classes": None}
    else:
        raise ConfigError("data must be an ImageDataset or an (x, y) pair of tensors")
    if not isinstance(x, torch.Tensor | LazyImages) or not isinstance(y, torch.Tensor):
        raise ConfigError("data must be an ImageDataset or an (x, y) pair of tensors")
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise DataError(
            f"expected images N x C x H x W and N labels, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise DataError(f"images must be uint8 or floating point in [0,1], got {x.dtype}")
    if y.is_floating_point() or y.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise DataError(f"labels must be integer class indices, got {y.dtype}")
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        check_unit_box(x)
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if len(y) == 0:
        raise DataError("no samples to evaluate")
    sample = sample_split(y, limit, seed, split=info["split"])
    if not sample.is_whole_split:
        idx = sample.index_tensor()
        # images on disk stay there: their loader decodes them batch by batch
        x = x.take(idx) if isinstance(x, LazyImages) else x[idx]
        y = y[idx]
    info.update(
        n=sample.n,
        n_available=sample.n_available,
        limit=None if sample.is_whole_split else limit,
        sample=None if sample.is_whole_split else sample.to_dict(),
    )
    return x, y.long(), info
