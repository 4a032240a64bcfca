"""Every config field checked against its declared type, from the dataclass annotations.

YAML files, flags and Python keywords all end in a config section's ``__post_init__``, which
calls :func:`check_field_types` first: a field added to any section is checked without code
of its own. ``bool`` is not an ``int`` (``batch_size: true`` is refused), an ``int`` is a
``float`` (``eps: 1`` is fine) but not the other way round (``epochs: 1.5`` is refused), a
quoted number is text (``momentum: "0.9"`` is refused), and every ``float`` must be finite
(``nan`` and ``inf`` are refused). A wrong value raises a :class:`ConfigError` naming the key,
the value and the expected type.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from fastrobust.errors import ConfigError

_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "text"}


def _arms(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union annotation (``int | None`` -> ``(int, NoneType)``)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is a valid value of a field annotated ``annotation``.

    Understands ``bool``, ``int``, ``float``, ``str``, ``None``, unions, ``Literal`` and
    ``list[...]`` / ``tuple[..., ...]``; any other annotation accepts every value."""
    for arm in _arms(annotation):
        origin = typing.get_origin(arm)
        if arm is type(None) or arm is None:
            ok = value is None
        elif arm is bool:
            ok = isinstance(value, bool)
        elif arm is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif arm is float:
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
        elif arm is str:
            ok = isinstance(value, str)
        elif origin is typing.Literal:
            ok = value in typing.get_args(arm)
        elif origin in (list, tuple):
            inner = [a for a in typing.get_args(arm) if a is not Ellipsis]
            ok = isinstance(value, list | tuple) and all(
                matches(v, inner[0] if len(inner) == 1 else Any) for v in value
            )
        else:
            ok = True
        if ok:
            return True
    return False


def describe_type(annotation: Any) -> str:
    """``int | None`` -> ``"an integer or null"`` (the words of the error messages)."""
    words = []
    for arm in _arms(annotation):
        origin = typing.get_origin(arm)
        if arm is type(None) or arm is None:
            words.append("null")
        elif origin is typing.Literal:
            words.append("one of " + ", ".join(repr(a) for a in typing.get_args(arm)))
        elif origin in (list, tuple):
            inner = [a for a in typing.get_args(arm) if a is not Ellipsis]
            each = f" ({describe_type(inner[0])} each)" if len(inner) == 1 else ""
            words.append("a list" + each)
        else:
            words.append(_NAMES.get(arm, getattr(arm, "__name__", str(arm))))
    return " or ".join(words)


def describe_value(value: Any) -> str:
    """``'0.9'`` -> ``"'0.9' (text)"``: the value and what kind of thing it is."""
    if isinstance(value, bool):
        kind = "true/false"
    elif isinstance(value, int):
        kind = "an integer"
    elif isinstance(value, float):
        kind = "a number" if math.isfinite(value) else "not finite"
    elif isinstance(value, str):
        kind = "text"
    elif value is None:
        kind = "null"
    else:
        kind = type(value).__name__
    return f"{value!r} ({kind})"


def check_field_types(obj: Any, section: str | None = None) -> None:
    """Raise :class:`ConfigError` for the first field of dataclass ``obj`` whose value does
    not match its annotation (``attack.eps: expected ..., got ...``; ``section`` qualifies
    the field's name, and the error carries it as ``field``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if not matches(value, hints[f.name]):
            name = f"{section}.{f.name}" if section else f.name
            raise ConfigError(
                f"{name}: expected {describe_type(hints[f.name])}, got {describe_value(value)}",
                field=name,
            )
