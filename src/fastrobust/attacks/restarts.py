"""Seeded attack runs: per-sample random starts and one attack run from a given start.

The robustness curve of Goodwin et al. (HPEC 2020), Figure 2 (:mod:`fastrobust.evaluation.curve`), and
its gradient-masking checks (:mod:`fastrobust.evaluation.masking`) both attack through here: random
starts are drawn per chunk from a generator seeded by ``(seed, chunk, eps index, attack index,
restart)``, and :func:`run_attack` runs PGD or APGD from such a start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fastrobust.attacks.apgd import apgd
from fastrobust.attacks.projected_gradient import BNMode, pgd
from fastrobust.attacks.threat import ThreatModel
from fastrobust.data.base import to_float
from fastrobust.errors import ConfigError

#: attacks a curve can run, alone or as a cascade in the given order
ATTACKS = ("pgd", "apgd-ce", "apgd-dlr")

Model = Callable[[torch.Tensor], torch.Tensor]


def start_seed(seed: int, chunk: int, eps_index: int, attack_index: int, restart: int) -> int:
    """The generator seed for one (chunk, eps, attack, restart) draw of random starts."""
    return _seed(seed, chunk, eps_index, attack_index, restart)


def _seed(*key: int) -> int:
    state = np.random.SeedSequence(list(key))
    return int(state.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


def seeded_starts(
    threat: ThreatModel,
    x: torch.Tensor,
    *,
    seed: int,
    chunk: int,
    eps_index: int,
    attack_index: int,
    restart: int,
) -> torch.Tensor:
    """Random starts for a whole chunk ``x``; the curve gives row ``i`` to sample ``i``."""
    g = torch.Generator(device=x.device)
    g.manual_seed(start_seed(seed, chunk, eps_index, attack_index, restart))
    return threat.sample(x, generator=g)


class _GivenStart:
    """A threat model whose random start is given: every other method is the wrapped one's.

    This lets the curve hand :func:`fastrobust.pgd` and :func:`fastrobust.attacks.apgd.apgd` its
    per-sample seeded starts without a second copy of their loops.
    """

    def __init__(self, threat: ThreatModel, start: torch.Tensor) -> None:
        self._threat = threat
        self._start = start

    def sample(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.shape != self._start.shape:
            raise RuntimeError(f"given start {tuple(self._start.shape)} for input {tuple(x.shape)}")
        return self._start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._threat, name)


def run_attack(
    name: str,
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    start: torch.Tensor,
    *,
    steps: int,
    step_size_factor: float = 2.5,
    bn_mode: BNMode = "eval",
) -> torch.Tensor:
    """One run of attack ``name`` from the perturbation ``start``; returns a valid delta."""
    given: Any = _GivenStart(threat, start)
    if name == "pgd":
        alpha = step_size_factor * threat.eps / steps
        x_adv = pgd(model, x, y, given, steps=steps, step_size=alpha, bn_mode=bn_mode)
    elif name in ("apgd-ce", "apgd-dlr"):
        x_adv = apgd(model, x, y, given, steps=steps, loss=name[5:], bn_mode=bn_mode)  # type: ignore[arg-type]
    else:
        raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return threat.project(x_adv - x, x)  # a buggy attack still cannot leave the threat model


def _fools(model: Model, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x + delta).argmax(1) != y


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return to_float(x) if x.dtype == torch.uint8 else x
