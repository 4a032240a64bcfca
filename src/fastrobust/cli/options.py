"""Range checks of numeric command-line options, run before any model or data is loaded."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable

from fastrobust.errors import ConfigError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_numbers(
    args: argparse.Namespace,
    *,
    positive: Iterable[str] = (),
    at_least_one: Iterable[str] = (),
    non_negative: Iterable[str] = (),
    finite: Iterable[str] = (),
) -> None:
    """Raise :class:`ConfigError` naming the first option out of its range (None: not given).

    ``positive``: finite and > 0; ``at_least_one``: >= 1; ``non_negative``: >= 0; ``finite``:
    every value of a list option is finite."""
    rules: list[tuple[Iterable[str], Callable[[float], bool], str]] = [
        (positive, lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
        (at_least_one, lambda v: v >= 1, ">= 1"),
        (non_negative, lambda v: v >= 0, ">= 0"),
    ]
    for names, ok, words in rules:
        for name in names:
            value = getattr(args, name)
            values = value if isinstance(value, list) else [value]
            for v in values:
                if v is not None and not ok(v):
                    raise ConfigError(f"{_flag(name)} must be {words}, got {v:g}")
    for name in finite:
        for v in getattr(args, name) or []:
            if not math.isfinite(v):
                raise ConfigError(f"{_flag(name)} values must be finite numbers, got {v:g}")
