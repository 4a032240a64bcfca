"""Typed settings: the one place a setting's type, default, help text and range are written.

Every job (training, evaluation, visualisation, timing, the study) reads its options from
dataclasses whose fields carry all four: the annotation is the type (``Literal[...]`` for a
choice), the default is the default, the attribute docstring under the field is the help text,
and :func:`setting` attaches a range rule. From those, this module derives

- the checks (:func:`check_settings`, called from each settings class's ``__post_init__``):
  the value's type (:mod:`fastrobust.settings_types`) and its range, raising a
  :class:`~fastrobust.errors.ConfigError` that names the field in library terms
  (``attack.steps must be >= 1, got 0``) and carries it as ``error.field``;
- the command-line flags (:func:`add_settings_flags`): one ``--flag`` per field, of the
  field's type, help from the docstring, choices from the ``Literal``; a flag left out is
  ``None`` in the namespace, so YAML defaults and the dataclass defaults still apply
  (:func:`given_values`);
- the wording of an error on the command line (:func:`render_error`): the field's name is
  replaced by its flag, so a Python caller reads ``attack.steps`` and a CLI user ``--steps``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastrobust.errors import ConfigError, FastRobustError
from fastrobust.settings_types import check_field_types

__all__ = [
    "Rule",
    "add_settings_flags",
    "at_least",
    "check_settings",
    "field_docs",
    "field_types",
    "flag_name",
    "flag_type",
    "given_values",
    "in_range",
    "int_or_word",
    "list_item_type",
    "non_negative",
    "positive",
    "render_error",
    "setting",
]


@dataclass(frozen=True)
class Rule:
    """A range rule of a numeric setting: ``ok(value)`` and the words of the error."""

    ok: Callable[[float], bool]
    words: str

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``name`` if ``value`` (or any item of a list
        value) breaks the rule; ``None`` (not set) and words such as ``auto`` pass."""
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not self.ok(v):
                raise ConfigError(f"{name} must be {self.words}, got {v:g}", field=name)


def positive() -> Rule:
    """A finite number > 0."""
    return Rule(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def non_negative() -> Rule:
    """A finite number >= 0."""
    return Rule(lambda v: math.isfinite(v) and v >= 0, ">= 0")


def at_least(low: int) -> Rule:
    """A number >= ``low`` (counts: steps, restarts, batch sizes)."""
    return Rule(lambda v: v >= low, f">= {low}")


def in_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Rule:
    """A number in the interval from ``low`` to ``high`` (open or closed at either end)."""

    def ok(v: float) -> bool:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return math.isfinite(v) and above and below

    left, right = "(" if low_open else "[", ")" if high_open else "]"
    return Rule(ok, f"in {left}{low:g}, {high:g}{right}")


_RULE = "fastrobust.rule"
_SPACED = "fastrobust.spaced"
_FLAG = "fastrobust.flag"
_TEXT = "fastrobust.text"
_REPEAT = "fastrobust.repeat"


def setting(
    default: Any = dataclasses.MISSING,
    *,
    rule: Rule | None = None,
    factory: Any = None,
    spaced: bool = False,
    flag: str | None = None,
    text: bool = False,
    repeat: bool = False,
) -> Any:
    """A dataclass field with a range rule (``steps: int = setting(20, rule=at_least(1))``);
    ``factory`` for a mutable default (a list); ``spaced``: a list whose flag takes
    space-separated values (``--lambdas 0.25 0.5``) instead of one comma-separated value.
    ``flag`` names its command-line flag when that is not the field's name (``attacks`` ->
    ``--attack``); ``text`` makes the flag take the raw text, which the settings class parses
    itself in ``__post_init__`` (so a value it cannot read is its own one-line error, not
    argparse's); ``repeat``: a list flag that may be given several times, each time one or
    comma-separated values (``--logger tensorboard --logger mlflow``)."""
    metadata: dict[str, Any] = {_RULE: rule} if rule is not None else {}
    if spaced:
        metadata[_SPACED] = True
    if flag is not None:
        metadata[_FLAG] = flag
    if text:
        metadata[_TEXT] = True
    if repeat:
        metadata[_REPEAT] = True
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def qualified(section: str | None, name: str) -> str:
    """``attack.steps``: a field's name as the library's errors say it."""
    return f"{section}.{name}" if section else name


def check_settings(obj: Any, section: str | None = None) -> None:
    """Check every field of the settings dataclass ``obj``: its type, then its rule."""
    check_field_types(obj, section)
    for f in dataclasses.fields(obj):
        rule = f.metadata.get(_RULE)
        if rule is not None:
            rule.check(qualified(section, f.name), getattr(obj, f.name))


# -- help texts and flag types from the annotations -----------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its attribute docstring in the source of dataclass ``cls`` (the help)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(inspect.getsource(klass)).body[0]
        assert isinstance(tree, ast.ClassDef)
        body = tree.body
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                out[node.target.id] = " ".join(nxt.value.value.split())
    return out


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> its resolved annotation."""
    return typing.get_type_hints(cls)


def int_or_word(text: str) -> int | str:
    """A flag value of an ``int | str`` field: a whole number, or a word such as ``auto``."""
    try:
        return int(text)
    except ValueError:
        return text


def _number(kind: type) -> Callable[[str], Any]:
    """Parse a number; a fraction such as ``8/255`` is allowed for floats."""

    def parse(text: str) -> Any:
        text = text.strip()
        if kind is float and re.fullmatch(r"[^/]+/[^/]+", text):
            top, bottom = text.split("/")
            return float(top) / float(bottom)
        return kind(text)

    parse.__name__ = kind.__name__
    return parse


def _comma_list(
    item: Callable[[str], Any], choices: tuple[Any, ...] | None
) -> Callable[[str], Any]:
    """A comma-separated list flag (``--eps 0,0.5,1``, ``--attack pgd,square``)."""

    def parse(text: str) -> list[Any]:
        values = [item(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        bad = [v for v in values if choices is not None and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown {bad[0]!r}; choose from {', '.join(map(str, choices or ()))}"
            )
        return values

    parse.__name__ = "list"
    return parse


def _arms(annotation: Any) -> list[Any]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def flag_type(annotation: Any) -> Any:
    """The flag type of a field annotation: ``int | None`` -> int, ``bool`` -> bool,
    ``int | str`` -> :func:`int_or_word`, ``Literal[...]`` -> str (choices from
    :func:`flag_choices`), ``list[float]`` -> a comma-separated list of numbers."""
    kinds = _arms(annotation)
    if set(kinds) == {int, str}:
        return int_or_word
    if len(kinds) != 1:
        raise TypeError(f"setting type {annotation} has no single flag type")
    (kind,) = kinds
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return type(typing.get_args(kind)[0])
    if origin in (list, tuple):
        inner = [a for a in typing.get_args(kind) if a is not Ellipsis]
        choices = None
        if inner and typing.get_origin(inner[0]) is typing.Literal:
            choices = typing.get_args(inner[0])
            item: Any = str
        else:
            item = flag_type(inner[0]) if inner else str
        if item in (int, float):
            item = _number(item)
        return _comma_list(item, choices)
    if kind not in (bool, int, float, str):
        raise TypeError(f"setting type {annotation} cannot be a flag")
    return kind


def flag_choices(annotation: Any) -> tuple[Any, ...] | None:
    """The choices of a ``Literal[...]`` field (None for any other)."""
    kinds = _arms(annotation)
    if len(kinds) == 1 and typing.get_origin(kinds[0]) is typing.Literal:
        return typing.get_args(kinds[0])
    return None


def flag_name(name: str) -> str:
    """``step_size_factor`` -> ``--step-size-factor``."""
    return "--" + name.replace("_", "-")


def list_item_type(annotation: Any) -> Any:
    """The flag type of one item of a ``list[...]`` field (for a space-separated flag)."""
    (kind,) = _arms(annotation)
    (inner,) = [a for a in typing.get_args(kind) if a is not Ellipsis]
    item = flag_type(inner)
    return _number(item) if item in (int, float) else item


def _default_text(f: dataclasses.Field[Any], sep: str = ",") -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return ""
    if value is None:  # "not set": the help text says what applies then
        return ""
    if isinstance(value, (list, tuple)):
        value = sep.join(map(str, value)) if value else "none"
    return f" (default: {value})"


def add_settings_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    section: str | None = None,
    skip: Iterable[str] = (),
    help_overrides: dict[str, str] | None = None,
) -> dict[str, str]:
    """Add one flag per field of settings class ``cls`` (except ``skip``); every flag
    defaults to ``None`` so a value not given can fall back to YAML or the field default.
    Returns ``{qualified field name: flag}`` for :func:`render_error`."""
    docs = field_docs(cls)
    docs.update(help_overrides or {})
    hints = field_types(cls)
    skipped = set(skip)
    flags: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if f.name in skipped or not f.init:
            continue
        flag = f.metadata.get(_FLAG) or flag_name(f.name)
        raw = bool(f.metadata.get(_TEXT))
        kind = str if raw else flag_type(hints[f.name])
        text = docs.get(f.name, "")
        if kind is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        elif f.metadata.get(_SPACED):
            parser.add_argument(
                flag,
                nargs="+",
                type=list_item_type(hints[f.name]),
                default=None,
                help=text + _default_text(f, sep=" "),
            )
        else:
            choices = None if raw else flag_choices(hints[f.name])
            repeated: dict[str, Any] = {"action": "extend"} if f.metadata.get(_REPEAT) else {}
            parser.add_argument(
                flag,
                **repeated,
                dest=f.name,
                metavar=None if choices else flag.lstrip("-").replace("-", "_").upper(),
                type=kind,
                default=None,
                choices=choices,
                help=text + _default_text(f),
            )
        flags[qualified(section, f.name)] = flag
    return flags


def given_values(
    args: argparse.Namespace, cls: type, *, skip: Iterable[str] = ()
) -> dict[str, Any]:
    """The fields of ``cls`` whose flags were given (not ``None``), by field name."""
    skipped = set(skip)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in skipped or not f.init:
            continue
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = value
    return out


def _replace_name(message: str, name: str, flag: str) -> str:
    return re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", flag, message)


def render_error(exc: FastRobustError, flags: dict[str, str]) -> str:
    """The message of ``exc`` as the command line says it: the field it names (its
    ``field``, ``attack.steps``) replaced by that field's flag (``--steps``), and so is any
    other qualified field of ``flags`` the message mentions (``... or set attack.method``)."""
    message = str(exc)
    field = getattr(exc, "field", None)
    if field is None:
        return message
    flag = (
        flags.get(field)
        or flags.get(field.rsplit(".", 1)[-1])
        or flag_name(field.rsplit(".", 1)[-1])
    )
    message = _replace_name(message, field, flag)
    for other, other_flag in flags.items():
        if "." in other and other != field:
            message = _replace_name(message, other, other_flag)
    return message
