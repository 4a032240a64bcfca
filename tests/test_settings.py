"""The settings foundation: flags, checks and error wording all come from one dataclass."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

import pytest

from fastrobust.errors import ConfigError
from fastrobust.settings import (
    add_settings_flags,
    at_least,
    check_settings,
    given_values,
    in_range,
    positive,
    render_error,
    setting,
)


@dataclass
class Toy:
    """A toy settings section."""

    steps: int = setting(20, rule=at_least(1))
    """attack steps"""
    factor: float = setting(2.5, rule=positive())
    """step size factor"""
    share: float = setting(0.5, rule=in_range(0, 1, low_open=True))
    """a share in (0, 1]"""
    norm: Literal["l2", "linf"] | None = None
    """threat model"""
    eps: list[float] = setting(factory=lambda: [0.0, 1.0], rule=in_range(0, 1))
    """radii"""
    checks: bool = True
    """run the checks"""

    def __post_init__(self) -> None:
        check_settings(self, "toy")


def _parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    parser = argparse.ArgumentParser()
    flags = add_settings_flags(parser, Toy, section="toy")
    return parser.parse_args(argv), flags


def test_flags_types_choices_and_defaults_come_from_the_fields():
    args, flags = _parse(["--steps", "3", "--eps", "0,8/255", "--no-checks", "--norm", "linf"])
    assert given_values(args, Toy) == {
        "steps": 3,
        "eps": [0.0, 8 / 255],
        "checks": False,
        "norm": "linf",
    }
    assert flags["toy.steps"] == "--steps" and flags["toy.share"] == "--share"
    assert Toy(**given_values(args, Toy)).factor == 2.5  # not given: the field's default
    with pytest.raises(SystemExit):
        _parse(["--norm", "l3"])  # a Literal is a choice


@pytest.mark.parametrize(
    ("keywords", "library", "cli"),
    [
        ({"steps": 0}, "toy.steps must be >= 1, got 0", "--steps must be >= 1, got 0"),
        ({"factor": float("nan")}, "toy.factor: expected a finite number", "--factor: expected"),
        ({"share": 0.0}, "toy.share must be in (0, 1], got 0", "--share must be in (0, 1]"),
        ({"eps": [0.5, 2.0]}, "toy.eps must be in [0, 1], got 2", "--eps must be in [0, 1], got 2"),
        ({"steps": 1.5}, "toy.steps: expected an integer", "--steps: expected an integer"),
    ],
)
def test_errors_name_the_field_and_the_cli_renders_the_flag(keywords, library, cli):
    with pytest.raises(ConfigError) as caught:
        Toy(**keywords)
    assert library in str(caught.value)
    assert caught.value.field == library.split(":")[0].split(" ")[0]
    _, flags = _parse([])
    assert cli in render_error(caught.value, flags)
    assert "toy." not in render_error(caught.value, flags)


def test_a_library_error_names_the_keyword_and_the_cli_the_flag(tmp_path, capsys):
    from fastrobust.cli import main
    from fastrobust.data import load_dataset

    with pytest.raises(ConfigError) as caught:
        load_dataset("cifar10", None)
    assert "needs data_dir" in str(caught.value) and caught.value.field == "data_dir"
    assert main(["train", "--dataset", "cifar10", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "needs --data-dir" in err and "data_dir" not in err


@dataclass
class Spaced:
    """A section with space-separated list flags."""

    weights: list[float] = setting(factory=lambda: [0.25, 0.75], spaced=True)
    """interpolation weights"""
    nodes: list[int] | None = setting(None, rule=at_least(0), spaced=True)
    """node indices"""
    layer: str | None = None
    """a layer"""

    def __post_init__(self) -> None:
        check_settings(self, "spaced")


def test_spaced_list_flags_take_several_values():
    parser = argparse.ArgumentParser()
    add_settings_flags(parser, Spaced, section="spaced")
    args = parser.parse_args(["--weights", "0.5", "1/4", "--nodes", "3", "5"])
    assert given_values(args, Spaced) == {"weights": [0.5, 0.25], "nodes": [3, 5]}
    assert Spaced(**given_values(args, Spaced)).nodes == [3, 5]
    assert given_values(parser.parse_args([]), Spaced) == {}
    helps = {a.dest: a.help for a in parser._actions}  # noqa: SLF001
    assert helps["weights"] == "interpolation weights (default: 0.25 0.75)"
    assert helps["layer"] == "a layer"  # a default of None ("not set") is not printed
    with pytest.raises(SystemExit):
        parser.parse_args(["--nodes", "x"])


def test_a_bad_list_item_says_what_each_item_must_be():
    with pytest.raises(ConfigError) as info:
        Spaced(weights=[0.5, float("nan")])
    assert str(info.value) == (
        "spaced.weights: expected a list (a finite number each), got [0.5, nan] (list)"
    )
    with pytest.raises(ConfigError, match=r"^spaced\.nodes must be >= 0, got -1$"):
        Spaced(nodes=[1, -1])


def test_render_error_names_every_flagged_field_the_message_mentions():
    # the error's own field and any other qualified field it mentions become flags; a field
    # without a flag of its own and plain words stay as they are
    _, flags = _parse([])
    exc = ConfigError("toy.steps 3 needs toy.norm linf (toy.other, steps)", field="toy.steps")
    assert render_error(exc, flags) == "--steps 3 needs --norm linf (toy.other, steps)"
    assert str(exc) == "toy.steps 3 needs toy.norm linf (toy.other, steps)"


@dataclass
class Renamed:
    """A field whose flag is not its name, and one whose flag text the class parses."""

    attacks: list[str] = setting(factory=lambda: ["pgd"], flag="--attack")
    """attacks in order"""
    grid: list[float] | None = setting(None, text=True)
    """a grid given as text"""

    def __post_init__(self) -> None:
        if isinstance(self.grid, str):
            self.grid = [float(part) for part in self.grid.split(":")]
        check_settings(self, "toy")


def test_a_flag_may_be_renamed_and_may_take_raw_text():
    parser = argparse.ArgumentParser()
    flags = add_settings_flags(parser, Renamed, section="toy")
    assert flags == {"toy.attacks": "--attack", "toy.grid": "--grid"}
    args = parser.parse_args(["--attack", "pgd,square", "--grid", "0:0.5"])
    assert given_values(args, Renamed) == {"attacks": ["pgd", "square"], "grid": "0:0.5"}
    assert Renamed(**given_values(args, Renamed)).grid == [0.0, 0.5]
    with pytest.raises(ConfigError) as caught:
        Renamed(attacks=[1])  # type: ignore[list-item]
    assert render_error(caught.value, flags).startswith("--attack: expected a list")
