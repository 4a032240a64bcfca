"""The curve's inputs: eps lists and attack names are validated before any attack runs."""

from __future__ import annotations

import pytest

from fastrobust.errors import ConfigError
from fastrobust.evaluation.inputs import parse_eps_list, validate_attacks, validate_eps_list


@pytest.mark.parametrize(
    "eps, message",
    [
        ([], "empty"),
        ([-0.5, 1.0], ">= 0"),
        ([1.0, 0.5], "increasing"),
        ([0.5, 0.5], "increasing"),
        ([float("nan")], "finite"),
    ],
)
def test_bad_eps_lists(eps, message):
    with pytest.raises(ConfigError, match=message):
        validate_eps_list(eps)


def test_eps_parsing():
    assert parse_eps_list("0, 8/255,16/255") == [0.0, 8 / 255, 16 / 255]
    for text in ("", " , ", "a", "1/0"):
        with pytest.raises(ConfigError):
            parse_eps_list(text)


def test_attack_names():
    assert validate_attacks("PGD, apgd-ce") == ["pgd", "apgd-ce"]
    for bad in ("", "fgsm", "pgd,pgd"):
        with pytest.raises(ConfigError):
            validate_attacks(bad)
