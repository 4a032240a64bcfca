"""RobustBench's ``model_info`` entry (Croce et al., "RobustBench: a standardized adversarial
robustness benchmark", NeurIPS 2021 Datasets and Benchmarks; github.com/RobustBench/robustbench).

An entry is one JSON file per model, ``model_info/<dataset>/<threat model>/<Name>.json``, with
``link, name, authors, additional_data, number_forward_passes, dataset, venue, architecture,
eps, clean_acc, reported, autoattack_acc`` and optionally ``footnote`` and ``unreliable``;
accuracies are percentages written with two decimals as text, ``eps`` as text (``8/255`` for
L-inf, ``0.5`` for L2). The model name follows their rule, first author's surname, year, first
word of the title (``Rice2020Overfitting``), optionally ``_`` and a variant
(``Rebuffi2021Fixing_28_10_cutmix_ddpm``).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from fastrobust.errors import ConfigError

#: SurnameYearTitleWord, then optional _variant parts
NAME_RULE = re.compile(r"[A-Z][A-Za-z]*(?:19|20)\d\d[A-Z][A-Za-z0-9]*(?:_[A-Za-z0-9-]+)*")
#: RobustBench's folder names of the threat models
THREAT_FOLDERS = {"linf": "Linf", "l2": "L2"}
#: norms whose eps RobustBench writes as a fraction of 255 (``8/255``)
FRACTION_NORMS = ("linf",)
#: the datasets RobustBench's L2/L-inf leaderboards hold
LEADERBOARD_DATASETS = ("cifar10", "cifar100", "imagenet")


def check_name(name: str, *, field: str) -> None:
    """Raise ConfigError unless ``name`` follows RobustBench's naming rule."""
    if not NAME_RULE.fullmatch(name):
        raise ConfigError(
            f"{field} {name!r} breaks RobustBench's naming rule: the first author's surname, "
            "the year and the title's first word, e.g. Goodwin2020Fast (optionally _ and a "
            "variant: Goodwin2020Fast_R18)",
            field=field,
        )


def check_link(link: str, *, field: str) -> None:
    if not re.fullmatch(r"https?://\S+", link):
        raise ConfigError(f"{field} must be a web address (https://...), got {link!r}", field=field)


def eps_text(norm: str, eps: float) -> str:
    """``8/255`` for an L-inf eps that is a whole number of 255ths, else ``0.5``."""
    steps = Fraction(eps).limit_denominator(255) * 255
    if norm in FRACTION_NORMS and steps.denominator == 1 and abs(float(steps) / 255 - eps) < 1e-9:
        return f"{int(steps)}/255"
    return f"{eps:g}"


def percent(accuracy: float) -> str:
    return f"{100 * accuracy:.2f}"


def model_info_entry(
    hand: dict[str, Any], *, dataset: str, norm: str, eps: float, clean: float, autoattack: float
) -> dict[str, Any]:
    """The entry's fields in RobustBench's order; ``hand``: the settings' hand-written ones."""
    entry: dict[str, Any] = {
        "link": hand["link"],
        "name": hand["title"],
        "authors": hand["authors"],
        "additional_data": bool(hand["additional_data"]),
        "number_forward_passes": 1,
        "dataset": dataset,
        "venue": hand["venue"],
        "architecture": hand["architecture"],
        "eps": eps_text(norm, eps),
        "clean_acc": percent(clean),
        "reported": hand["reported"] or percent(autoattack),
        "autoattack_acc": percent(autoattack),
    }
    if hand.get("footnote"):
        entry["footnote"] = hand["footnote"]
    entry["unreliable"] = False
    return entry
