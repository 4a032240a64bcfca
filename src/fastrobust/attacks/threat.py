"""Threat models: the one abstraction every attack, adversary and visualisation uses.

A threat model is a norm ball of radius ``eps`` around an image ``x`` in ``[0,1]``,
intersected with the ``[0,1]`` box. It supplies three operations (the foolbox-3 split):

* ``sample(x)``: a random start inside the ball (and the box);
* ``step(delta, grad, alpha)``: move ``delta`` by ``alpha`` along the steepest-ascent
  direction of the norm (the per-sample L2-normalised gradient, or its sign for L-inf);
* ``project(delta, x)``: back into the ball, then into the box.

Minimum-norm attacks (FAB) also need ``dual_norm(grad)`` (the distance to a linearised
decision boundary is ``|f| / ||grad||_dual``) and ``to_hyperplane(z, w, b)``: the smallest
perturbation, in this norm and inside the box, that puts ``z`` on the hyperplane ``w.z = b``.

All norms and normalisations are per sample: every dimension but the batch one is flattened.
``eps`` is one number, or a tensor with one radius per row (:meth:`ThreatModel.per_row`), so one
attack run can cover several eps at once, a batch of ``(point, eps)`` pairs (the robustness
curve runs Square over its whole eps grid this way); :meth:`ThreatModel.rows` keeps the radii
of a subset of rows, and every operation uses each row's own radius.
Projecting into the box after the ball never increases the norm (each coordinate only shrinks
towards zero), so the result of ``project`` satisfies both constraints at once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar, cast

import torch

from fastrobust.errors import ConfigError

_TINY = 1e-12


def per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector ``v`` (shape B) to broadcast against ``x`` (B x ...)."""
    return v.view(-1, *([1] * (x.dim() - 1)))


def project_box(delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Clip ``delta`` so that ``x + delta`` lies in ``[0,1]``."""
    return (x + delta).clamp_(0.0, 1.0) - x


class ThreatModel(ABC):
    """A norm ball of radius ``eps`` intersected with the ``[0,1]`` image box."""

    name: ClassVar[str]
    #: random-start names this norm understands (first is the default)
    random_starts: ClassVar[tuple[str, ...]]
    #: default single-step size as a multiple of eps (fast adversarial training)
    fast_alpha_factor: ClassVar[float]

    def __init__(self, eps: float | torch.Tensor, *, random_start: str | None = None) -> None:
        if isinstance(eps, torch.Tensor) and eps.dim() > 0:
            if eps.dim() != 1 or not bool(torch.isfinite(eps).all() & (eps >= 0).all()):
                raise ConfigError("per-row eps must be a vector of finite numbers >= 0")
            eps = eps.detach()
        else:
            eps = float(eps)
            if not math.isfinite(eps) or eps < 0:
                raise ConfigError(f"eps must be a finite number >= 0, got {eps}")
        start = self.random_starts[0] if random_start is None else random_start
        if start not in self.random_starts:
            raise ConfigError(
                f"random start {start!r} is not defined for {self.name}; "
                f"choose one of {', '.join(self.random_starts)}"
            )
        self.eps: float | torch.Tensor = eps
        self.random_start = start

    def __repr__(self) -> str:
        eps = f"{self.eps:g}" if isinstance(self.eps, float) else f"<{len(self.eps)} per row>"
        return f"{type(self).__name__}(eps={eps}, random_start={self.random_start!r})"

    def radius(self, like: torch.Tensor) -> float | torch.Tensor:
        """``eps`` shaped to broadcast against ``like`` (B x ...): the number, or one per row."""
        return self.eps if isinstance(self.eps, float) else per_sample(self.eps, like).to(like)

    def _eps_per_sample(self, like: torch.Tensor) -> float | torch.Tensor:
        """``eps`` to compare with a per-sample norm (shape B): the number, or one per row."""
        return self.eps if isinstance(self.eps, float) else self.eps.to(like)

    def rows(self, index: torch.Tensor) -> ThreatModel:
        """The threat model of the rows ``index`` of a batch (itself when eps is one number)."""
        if isinstance(self.eps, float):
            return self
        return type(self)(self.eps[index], random_start=self.random_start)

    def per_row(self, eps: torch.Tensor) -> ThreatModel:
        """The same norm and random start with radius ``eps[i]`` for row ``i`` of a batch."""
        return type(self)(torch.as_tensor(eps).reshape(-1), random_start=self.random_start)

    def box_diameter(self, image_shape: tuple[int, ...] | torch.Size) -> float:
        """The norm of the longest perturbation inside the ``[0,1]`` box (corner to opposite
        corner): 1 for L-inf, ``sqrt(C*H*W)`` for L2. A ball this large reaches every image.
        Computed in float64, so it equals ``math.sqrt(C*H*W)`` exactly (float32 is off in the
        seventh digit where ``C*H*W`` is not a square, e.g. 3x32x32)."""
        return float(self.norm(torch.ones(1, *image_shape, dtype=torch.float64)))

    def with_eps(self, eps: float | torch.Tensor) -> ThreatModel:
        """The same norm and random start with another radius."""
        return type(self)(eps, random_start=self.random_start)

    @abstractmethod
    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        """Per-sample norm of ``delta`` (shape B)."""

    @abstractmethod
    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """Unit steepest-ascent direction for this norm, per sample."""

    @abstractmethod
    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        """Closest point of the eps-ball (centred at 0) to ``delta``, per sample."""

    @abstractmethod
    def dual_norm(self, grad: torch.Tensor) -> torch.Tensor:
        """Per-sample dual norm of ``grad`` (L1 for L-inf, L2 for L2), shape B."""

    @abstractmethod
    def _budget_weights(
        self, w_abs: torch.Tensor, room: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, r)`` such that moving coordinate ``i`` as far as a norm level ``lam`` allows
        changes ``w.d`` by ``a_i * min(lam, r_i)`` (``room``: how far the box lets it move)."""

    @abstractmethod
    def _move_at_level(
        self, lam: torch.Tensor, w_abs: torch.Tensor, room: torch.Tensor
    ) -> torch.Tensor:
        """Magnitude of each coordinate's move at norm level ``lam`` (shape B x 1)."""

    def to_hyperplane(self, z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Smallest ``d`` in this norm with ``w.(z + d) = b`` and ``z + d`` in ``[0,1]``.

        The projection step of FAB (Croce & Hein 2020, "Minimally distorted adversarial
        examples with a fast adaptive boundary attack", Section 3.1), per sample; ``z`` and
        ``w`` are B x D, ``b`` is B. Both norms' minimisers move each coordinate towards the
        side that helps, up to a common level ``lam`` (L-inf: ``|d_i| = min(lam, room_i)``;
        L2: ``|d_i| = min(lam |w_i|, room_i)``), so one solver finds the smallest ``lam``
        with enough progress by sorting the breakpoints. Where the box makes the hyperplane
        unreachable every coordinate moves as far as the box allows.
        """
        gap = b - (w * z).sum(1)  # the change of w.d we need
        w = w * torch.where(gap < 0, -1.0, 1.0).to(w.dtype)[:, None]  # now we need w.d = |gap|
        need = gap.abs()
        room = torch.where(w > 0, 1 - z, z).clamp_min(0) * (w != 0)
        w_abs = w.abs()
        weight, reach = self._budget_weights(w_abs, room)
        reach, order = reach.sort(dim=1)
        weight = weight.gather(1, order)
        below = (weight * reach).cumsum(1)  # sum_{j <= k} a_j r_j
        used = weight.cumsum(1)  # sum_{j <= k} a_j
        total = used[:, -1:]
        progress = below + reach * (total - used)  # progress when lam = r_k
        k = (progress < need[:, None]).sum(1, keepdim=True)  # breakpoints passed
        last = k.clamp(max=reach.shape[1] - 1)
        done_below = torch.where(k > 0, below.gather(1, (k - 1).clamp_min(0)), 0.0)
        done_used = torch.where(k > 0, used.gather(1, (k - 1).clamp_min(0)), 0.0)
        free = (total - done_used).clamp_min(_TINY)
        lam = torch.where(
            k < reach.shape[1], (need[:, None] - done_below) / free, reach.gather(1, last)
        )
        return w.sign() * self._move_at_level(lam, w_abs, room)

    @abstractmethod
    def _sample_ball(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A random start of the configured kind, before the box projection."""

    def sample(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random start delta inside the ball and with ``x + delta`` in ``[0,1]``."""
        if self.random_start == "none" or (isinstance(self.eps, float) and self.eps == 0):
            return torch.zeros_like(x)
        return project_box(self._sample_ball(x, generator), x)

    def step(self, delta: torch.Tensor, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        """``delta + alpha * direction(grad)`` (not projected)."""
        return delta + alpha * self.direction(grad)

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project ``delta`` into the ball, then into the box around ``x``."""
        return project_box(self.project_ball(delta), x)

    def contains(self, delta: torch.Tensor, x: torch.Tensor, *, rtol: float = 1e-5) -> torch.Tensor:
        """Per-sample boolean: is ``delta`` a valid perturbation of ``x`` under this model?"""
        eps = self._eps_per_sample(delta)
        inside = self.norm(delta) <= eps * (1 + rtol) + 1e-7
        adv = (x + delta).flatten(1)
        in_box = (adv >= -1e-6).all(1) & (adv <= 1 + 1e-6).all(1)
        return inside & in_box


class L2(ThreatModel):
    """L2 ball. Random starts (Goodwin et al. 2020, Algorithm 1 samples uniformly in the ball):

    * ``ball``: uniform in the ball, radius ``eps * U**(1/d)`` times a uniform direction (default);
    * ``sphere``: uniform on the surface, radius ``eps`` (MadryLab ``robustness``);
    * ``radius``: radius ``eps * U`` (torchattacks), which concentrates mass near the centre;
    * ``none``: start at zero.
    """

    name = "l2"
    random_starts = ("ball", "sphere", "radius", "none")
    fast_alpha_factor = 1.5

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, delta.flatten(1).norm(p=2, dim=1))

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / per_sample(self.norm(grad).clamp_min(_TINY), grad)

    def dual_norm(self, grad: torch.Tensor) -> torch.Tensor:
        return self.norm(grad)

    def _budget_weights(
        self, w_abs: torch.Tensor, room: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return w_abs.square(), room / w_abs.clamp_min(_TINY)

    def _move_at_level(
        self, lam: torch.Tensor, w_abs: torch.Tensor, room: torch.Tensor
    ) -> torch.Tensor:
        return torch.minimum(lam * w_abs, room)

    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        eps = self._eps_per_sample(delta)
        factor = (eps / self.norm(delta).clamp_min(_TINY)).clamp(max=1.0)
        return delta * per_sample(factor, delta)

    def _sample_ball(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        batch, dim = x.shape[0], x[0].numel()
        g = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        unit = self.direction(g)
        if self.random_start == "sphere":
            return self.radius(x) * unit
        u = torch.rand(batch, device=x.device, dtype=x.dtype, generator=generator)
        radius = u.pow(1.0 / dim) if self.random_start == "ball" else u
        return self.radius(x) * per_sample(radius, x) * unit


class Linf(ThreatModel):
    """L-infinity ball. Random starts: ``ball`` (uniform in the cube, as in FGSM with random
    start, Wong et al. 2020), ``sphere`` (a random corner, every coordinate at +-eps), ``none``.
    """

    name = "linf"
    random_starts = ("ball", "sphere", "none")
    fast_alpha_factor = 1.25

    def norm(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(dim=1)

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def dual_norm(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.flatten(1).abs().sum(dim=1)

    def _budget_weights(
        self, w_abs: torch.Tensor, room: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return w_abs, room

    def _move_at_level(
        self, lam: torch.Tensor, w_abs: torch.Tensor, room: torch.Tensor
    ) -> torch.Tensor:
        return torch.minimum(lam.expand_as(room), room)

    def project_ball(self, delta: torch.Tensor) -> torch.Tensor:
        eps = self.radius(delta)
        return delta.clamp(-eps, eps)  # type: ignore[arg-type]  # torch stub: no union overload

    def _sample_ball(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        u = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        if self.random_start == "sphere":
            return self.radius(x) * torch.where(u < 0.5, -1.0, 1.0).to(x.dtype)
        return self.radius(x) * (2 * u - 1)


THREAT_MODELS: dict[str, type[ThreatModel]] = {cls.name: cls for cls in (L2, Linf)}


def threat_model(name: str, eps: float, *, random_start: str | None = None) -> ThreatModel:
    """Build a threat model by norm name (``l2`` or ``linf``)."""
    if not isinstance(name, str):
        raise ConfigError(
            f"norm must be one of {', '.join(THREAT_MODELS)} (a name), got {name!r}", field="norm"
        )
    key = name.lower().replace("-", "")
    if key not in THREAT_MODELS:
        raise ConfigError(f"unknown norm {name!r}; choose one of {', '.join(THREAT_MODELS)}")
    return THREAT_MODELS[key](eps, random_start=random_start)
