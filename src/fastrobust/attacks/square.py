"""Square Attack: a score-based black-box attack (random search), L-inf and L2.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search" (ECCV 2020), Algorithms 1-3; the fourth attack of
AutoAttack. It uses only the model's scores, never a gradient, so gradient masking (rounding,
non-differentiable preprocessing, saturated softmax) does not stop it: when Square lowers
the accuracy left by the gradient attacks, their result was not trustworthy.

Each sample keeps its best point ``x_best`` (lowest margin ``z_y - max_{k != y} z_k``) and,
every query, proposes a change of ``x_best`` on a random square window of side ``s``; the
proposal is kept when it lowers the margin. The window covers a fraction ``p`` of the image,
``p`` halving after queries 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (the paper's
schedule for 10,000 queries; AutoAttack uses it unscaled with 5000 queries and ``p_init =
0.8``). The proposals depend on the norm:

* L-inf: start from vertical stripes of ``+-eps``; a proposal sets the window, per channel,
  to ``+-eps`` (a vertex of the ball, where the paper shows the solutions lie);
* L2: start from a grid of tiles, each a "mountain" pattern of random sign; a proposal moves
  the perturbation's mass from a second random window into the first one, reshaped as a new
  signed mountain, then rescales the whole perturbation to norm ``eps`` (Algorithm 3).

Randomness is per sample (window positions and signs) from ``generator``, so a seeded run is
reproducible. Fooled samples are not queried again.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from typing import cast

import torch

from fastrobust.attacks.contract import BNMode, Model, attack_mode, is_fooled
from fastrobust.attacks.restarts import AttackRun, check_start, worst_case_over_restarts
from fastrobust.attacks.threat import L2, Linf, ThreatModel, per_sample
from fastrobust.errors import ConfigError

#: queries after which the window fraction ``p`` halves (the paper's schedule)
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_fraction(query: int, p_init: float, *, queries: int, rescale: bool = False) -> float:
    """Fraction of the image a window covers at ``query`` (0-based).

    With ``rescale`` the schedule, written for 10,000 queries, is stretched to ``queries``.
    """
    at = int(query / queries * 10000) if rescale else query
    return cast(float, p_init / 2 ** sum(at > h for h in HALVINGS))


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{k != y} z_k`` per sample: negative exactly when ``y`` is not the top class."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    return z_y - logits.scatter(1, y[:, None], -math.inf).amax(1)


def _window_mask(
    corner: tuple[torch.Tensor, torch.Tensor], side: int, height: int, width: int
) -> torch.Tensor:
    """B x 1 x H x W booleans: each sample's ``side x side`` window at ``corner``."""
    top, left = corner
    rows = torch.arange(height, device=top.device)
    cols = torch.arange(width, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _corners(
    n: int, side: int, height: int, width: int, g: torch.Generator | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    top = torch.randint(0, height - side + 1, (n,), generator=g, device=device)
    left = torch.randint(0, width - side + 1, (n,), generator=g, device=device)
    return top, left


def _signs(shape: tuple[int, ...], g: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    bits = torch.randint(0, 2, shape, generator=g, device=like.device)
    return (2 * bits - 1).to(like.dtype)


def mountain(rows: int, cols: int, *, device: torch.device | None = None) -> torch.Tensor:
    """A ``rows x cols`` pattern of nested rectangles: the pixel at Chebyshev distance ``k``
    from the centre gets ``sum_{j >= k} 1 / (j + 1)^2``; unit L2 norm (the paper's eta)."""
    i = torch.arange(rows, device=device, dtype=torch.float64)[:, None]
    j = torch.arange(cols, device=device, dtype=torch.float64)[None, :]
    dist = torch.maximum((i - rows // 2).abs(), (j - cols // 2).abs())
    levels = max(rows // 2, cols // 2) + 1
    weights = 1.0 / torch.arange(1, levels + 1, device=device, dtype=torch.float64) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[k] = sum_{j >= k} weights[j]
    pattern = tail[dist.long()]
    return cast(torch.Tensor, (pattern / pattern.norm()).float())


def two_mountains(side: int, *, device: torch.device | None = None) -> torch.Tensor:
    """The L2 proposal's window: a positive mountain over a negative one, unit L2 norm."""
    top = mountain(side // 2, side, device=device) if side // 2 else torch.zeros(0, side)
    bottom = mountain(side - side // 2, side, device=device)
    both = torch.cat([top.to(bottom.device), -bottom])
    return cast(torch.Tensor, both / both.norm())


@functools.lru_cache(maxsize=64)
def _cached_two_mountains(side: int, device: torch.device) -> torch.Tensor:
    """:func:`two_mountains`, computed once per window side (Square asks every query)."""
    return two_mountains(side, device=device)


class _Proposals(ABC):
    """What Square needs from a norm: a start, a window side, and a proposal.

    ``threat`` is passed per call, so its radius may be one per row (one run over several eps).
    """

    @abstractmethod
    def side(self, fraction: float, height: int, width: int) -> int:
        """Window side for a window covering ``fraction`` of the image."""

    @abstractmethod
    def start(
        self, threat: ThreatModel, x: torch.Tensor, g: torch.Generator | None
    ) -> torch.Tensor:
        """The initial perturbation (in the ball and the box)."""

    @abstractmethod
    def propose(
        self,
        threat: ThreatModel,
        x: torch.Tensor,
        delta: torch.Tensor,
        side: int,
        g: torch.Generator | None,
    ) -> torch.Tensor:
        """A new perturbation differing from ``delta`` around one random window."""


class _LinfSquares(_Proposals):
    def side(self, fraction: float, height: int, width: int) -> int:
        return min(max(round(math.sqrt(fraction * height * width)), 1), height, width)

    def start(
        self, threat: ThreatModel, x: torch.Tensor, g: torch.Generator | None
    ) -> torch.Tensor:
        n, c, _, w = x.shape
        stripes = threat.radius(x) * _signs((n, c, 1, w), g, x)
        return threat.project(stripes.expand_as(x), x)

    def propose(
        self,
        threat: ThreatModel,
        x: torch.Tensor,
        delta: torch.Tensor,
        side: int,
        g: torch.Generator | None,
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        mask = _window_mask(_corners(n, side, h, w, g, x.device), side, h, w)
        vertex = threat.radius(x) * _signs((n, c, 1, 1), g, x)
        return threat.project(torch.where(mask, vertex, delta), x)


class _L2Squares(_Proposals):
    def side(self, fraction: float, height: int, width: int) -> int:
        side = max(round(math.sqrt(fraction * height * width)), 3)
        side += 1 - side % 2  # odd, so the mountains have a centre pixel
        return min(side, height, width)

    @staticmethod
    def _to_eps(threat: ThreatModel, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        size = per_sample(threat.norm(delta).clamp_min(1e-12), delta)
        return threat.project(threat.radius(delta) * delta / size, x)

    def start(
        self, threat: ThreatModel, x: torch.Tensor, g: torch.Generator | None
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        tile = max(h // 5, 1)
        count_h, count_w = h // tile, w // tile
        pattern = mountain(tile, tile, device=x.device).to(x.dtype)
        signs = _signs((n, c, count_h, count_w), g, x)
        tiles = signs[:, :, :, None, :, None] * pattern[None, None, None, :, None, :]
        grid = tiles.reshape(n, c, count_h * tile, count_w * tile)
        delta = torch.zeros_like(x)
        top, left = (h - count_h * tile) // 2, (w - count_w * tile) // 2
        delta[:, :, top : top + count_h * tile, left : left + count_w * tile] = grid
        return self._to_eps(threat, delta, x)

    def propose(
        self,
        threat: ThreatModel,
        x: torch.Tensor,
        delta: torch.Tensor,
        side: int,
        g: torch.Generator | None,
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        first = _corners(n, side, h, w, g, x.device)
        second = _corners(n, side, h, w, g, x.device)
        in_first = _window_mask(first, side, h, w)
        in_second = _window_mask(second, side, h, w)
        both = in_first | in_second
        # per channel: the mass in both windows, plus an equal share of the unused budget
        mass = (delta * both).square().sum((2, 3))
        norm = threat.norm(delta)
        spare = (threat.radius(norm) ** 2 - norm.square()).clamp_min(0)
        budget = (mass + spare[:, None] / c).sqrt()  # B x C
        rows = first[0][:, None] + torch.arange(side, device=x.device)  # B x s
        cols = first[1][:, None] + torch.arange(side, device=x.device)
        batch = torch.arange(n, device=x.device)[:, None, None]
        old = delta[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # B C s s
        old = old / old.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        pattern = _cached_two_mountains(side, x.device).to(x.dtype)
        flip = torch.randint(0, 2, (n, 1, 1, 1), generator=g, device=x.device).bool()
        pattern = torch.where(flip, pattern.T, pattern)  # B x 1 x s x s
        new = pattern * _signs((n, c, 1, 1), g, x) + old
        new = new / new.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        new = new * budget[:, :, None, None]
        out = torch.where(in_second, 0.0, delta)
        out[batch, :, rows[:, :, None], cols[:, None, :]] = new.permute(0, 2, 3, 1)
        return self._to_eps(threat, out, x)


_PROPOSALS: dict[type[ThreatModel], type[_Proposals]] = {Linf: _LinfSquares, L2: _L2Squares}


def _square_run(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    proposals: _Proposals,
    delta: torch.Tensor,
    *,
    queries: int,
    p_init: float,
    rescale_schedule: bool,
    generator: torch.Generator | None,
) -> AttackRun:
    """One run from ``delta``: per sample the first fooling point, else the lowest-margin one
    (its loss is minus the margin, so higher is worse for the model).

    The rows still attacked are kept gathered (inputs, labels, radii, perturbations, margins)
    and are gathered again only when a query fools some of them, not at every query.
    """
    _, _, h, w = x.shape
    logits = model(x + delta)
    best = margin(logits, y)
    fooled = is_fooled(logits, y)
    active = (~fooled).nonzero().squeeze(1)
    xa, ya, ta, da, ba = x[active], y[active], threat.rows(active), delta[active], best[active]
    for query in range(queries):
        if active.numel() == 0:
            break
        fraction = window_fraction(query, p_init, queries=queries, rescale=rescale_schedule)
        side = proposals.side(fraction, h, w)
        candidate = proposals.propose(ta, xa, da, side, generator)
        logits = model(xa + candidate)
        value = margin(logits, ya)
        hit = is_fooled(logits, ya)
        take = hit | (value < ba)
        da = torch.where(per_sample(take, da), candidate, da)
        ba = torch.where(take, value, ba)
        if bool(hit.any()):  # write the attacked rows back, then keep only the unfooled ones
            delta[active], best[active] = da, ba
            fooled[active[hit]] = True
            keep = (~hit).nonzero().squeeze(1)
            active = active[keep]
            xa, ya, ta, da, ba = xa[keep], ya[keep], ta.rows(keep), da[keep], ba[keep]
    delta[active], best[active] = da, ba
    return AttackRun(delta, fooled, -best)


@torch.no_grad()
def square(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatModel,
    *,
    queries: int = 5000,
    p_init: float = 0.8,
    restarts: int = 1,
    start: torch.Tensor | None = None,
    rescale_schedule: bool = False,
    generator: torch.Generator | None = None,
    bn_mode: BNMode = "eval",
) -> torch.Tensor:
    """Untargeted Square Attack inside ``threat`` with ``queries`` queries; returns ``x_adv``.

    Defaults are AutoAttack's (5000 queries, ``p_init = 0.8``, one run, unscaled schedule).
    ``start`` is the first perturbation; None draws the norm's own start (stripes for L-inf,
    tiles for L2) from ``generator``. Restarts keep the worst case per sample through
    :func:`fastrobust.attacks.restarts.worst_case_over_restarts` (a restart runs only on the
    samples no earlier one fooled). The result is inside the ball and the box. ``threat`` may
    have one radius per row (:meth:`~fastrobust.attacks.threat.ThreatModel.per_row`): one run
    then attacks every ``(point, eps)`` pair of the batch at once, each inside its own ball.
    """
    if queries < 1 or restarts < 1:
        raise ConfigError(
            f"Square needs queries >= 1 and restarts >= 1, got {queries} and {restarts}"
        )
    if not 0 < p_init <= 1:
        raise ConfigError(f"p_init must be in (0, 1], got {p_init}")
    if x.dim() != 4:
        raise ConfigError(f"Square attacks images (N x C x H x W), got shape {tuple(x.shape)}")
    kind = _PROPOSALS.get(type(threat))
    if kind is None:
        raise ConfigError(f"Square is defined for {', '.join(t.name for t in _PROPOSALS)} only")
    check_start(start, x, restarts)
    proposals = kind()
    x, y = x.detach(), y.detach()
    if isinstance(threat.eps, float) and threat.eps == 0:
        return x.clone()

    def run_once(active: torch.Tensor, _restart: int) -> AttackRun:
        xa, ta = x[active], threat.rows(active)
        first = proposals.start(ta, xa, generator) if start is None else start[active].clone()
        return _square_run(
            model, xa, y[active], ta, proposals, ta.project(first, xa), queries=queries,
            p_init=p_init, rescale_schedule=rescale_schedule, generator=generator,
        )  # fmt: skip

    with attack_mode(model, bn_mode):
        best = worst_case_over_restarts(run_once, x, restarts)
    return x + threat.project(best.delta, x)
