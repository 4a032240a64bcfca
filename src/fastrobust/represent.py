"""Looking inside robust models: feature visualisation, interpolation, large targeted perturbations.

Goodwin et al. (HPEC 2020, Figures 3-5) show that models trained with fast (one-step) or 7-step
adversarial training have human-aligned representations, where a standard model's look like
noise. Following Engstrom et al. (2019), "Adversarial robustness as a prior for learned
representations", all three tools here are the *same* optimiser over the input as the attacks:
:func:`fastrobust.attacks.pgd` with a large eps and a custom per-sample loss. Nothing here has
its own gradient loop.

* :func:`visualize_features`: direct feature visualisation, maximise the activation of node
  ``i`` of a representation layer, starting from a seed image (noise or a test image).
* :func:`interpolate_representations`: find ``x_lam`` whose representation is closest (L2) to
  ``lam * f(x1) + (1 - lam) * f(x2)`` (Goodwin et al. Eq. 14 with the sign typo fixed).
* :func:`targeted_perturbation`: large-eps targeted PGD on the cross-entropy of a target class.

The representation layer defaults to the input of the model's final :class:`torch.nn.Linear`
(the penultimate features); any module can be named instead, in which case its output is used.
For a convolutional activation ``(B, C, H, W)`` a "node" is a channel, averaged over positions.

Every result records the objective before and after, its trajectory over the steps, and the
perturbation norm. The model's train/eval mode, parameters and BatchNorm statistics are left as
they were found (pgd's invariants); results are always in ``[0,1]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn

from fastrobust.attacks.contract import (
    BNMode,
    LossFn,
    attack_mode,
    cross_entropy_per_sample,
    pgd_step_size,
)
from fastrobust.attacks.projected_gradient import pgd
from fastrobust.attacks.threat import ThreatModel, threat_model
from fastrobust.errors import ConfigError, DataError
from fastrobust.model_info import check_model_fits
from fastrobust.settings import check_settings, positive, setting

Tool = Literal["features", "interpolate", "targeted"]
StartKind = Literal["noise", "blend", "x1", "x2"]
Norm = Literal["l2", "linf"]

#: the interpolation weights of Figure 4 (``fastrobust visualize interpolate --lambdas``)
DEFAULT_LAMBDAS = (0.25, 0.5, 0.75)
#: default radius of the targeted ball, as a fraction of the threat model's diameter of the
#: ``[0,1]`` box (L2: ``0.5 * sqrt(d)``; L-inf: 0.3)
TARGETED_FRACTION = {"l2": 0.5, "linf": 0.3}


# ----------------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class Budget:
    """The optimisation over the input that every tool runs: threat model, radius, steps and
    step size (None: scaled to the image size by :meth:`resolve`); the one budget of a
    visualisation, shared by every model of a figure."""

    norm: Norm = "l2"
    """threat model norm"""
    eps: float | None = setting(None, rule=positive())
    """radius (default: scaled to the image size)"""
    steps: int | None = setting(None, rule=positive())
    """PGD steps (default: scaled to the image size)"""
    step_size: float | None = setting(None, rule=positive())
    """step length in the threat model's norm (default: 2.5*eps/steps)"""
    progress: bool = False
    """a progress bar over the optimisation steps on stderr"""

    def __post_init__(self) -> None:
        check_settings(self, "budget")

    def options(self) -> dict[str, Any]:
        """The budget as the keywords of the tools (``visualize_features(..., **options)``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def resolve(self, tool: Tool, image_shape: Sequence[int]) -> Budget:
        """Every value set, scaled to the image size ``d = C*H*W`` where not given.

        * eps: ``features`` and ``interpolate`` are unconstrained (the diameter of the
          ``[0,1]`` box: L2 ``sqrt(d)``, L-inf 1); ``targeted`` uses a fraction of it
          (:data:`TARGETED_FRACTION`: L2 ``0.5*sqrt(d)``, L-inf 0.3);
        * steps: ``d/3`` clipped to ``[200, 1000]`` (8x8 digits: 200; 32x32 colour: 1000,
          the paper's count for its large targeted perturbations);
        * step size: ``2.5 * eps / steps`` (Madry et al. 2018), so the whole radius is
          reachable.
        """
        shape = tuple(int(s) for s in image_shape)
        eps = self.eps
        if eps is None:
            threat = threat_model(self.norm, 1.0)
            # the box diameter in float64, so that the L2 default is sqrt(d) to the last bit
            diameter = float(threat.norm(torch.ones(1, *shape, dtype=torch.float64)))
            eps = diameter * (TARGETED_FRACTION[threat.name] if tool == "targeted" else 1.0)
        steps = (
            self.steps
            if self.steps is not None
            else int(min(1000, max(200, math.prod(shape) // 3)))
        )
        step_size = self.step_size if self.step_size is not None else pgd_step_size(eps, steps)
        return Budget(self.norm, float(eps), int(steps), float(step_size), self.progress)


def default_budget(
    tool: Tool,
    image_shape: Sequence[int],
    *,
    norm: Norm = "l2",
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
) -> Budget:
    """:meth:`Budget.resolve` of the budget with these values (any value given is kept)."""
    return Budget(norm, eps, steps, step_size).resolve(tool, image_shape)


# ---------------------------------------------------------------------------------- results


@dataclass
class RepresentResult:
    """What one of the three tools produced, one row per optimised image (N of them)."""

    images: torch.Tensor
    """optimised images, N x C x H x W in ``[0,1]``"""
    starts: torch.Tensor
    """where each optimisation started (seed, blend or source image), N x C x H x W"""
    objective: str
    """name of the recorded objective: activation, distance or target_prob"""
    maximize: bool
    """whether the objective is maximised (activation, target_prob) or minimised (distance)"""
    before: torch.Tensor
    """objective at the start (N)"""
    after: torch.Tensor
    """objective at the result (N)"""
    trajectory: torch.Tensor
    """objective before every step and at the end ((steps + 1) x N)"""
    perturbation_norm: torch.Tensor
    """norm of ``images - starts`` in the threat model's norm (N)"""
    budget: Budget
    """eps, steps and step size used"""
    layer: str | None = None
    """representation layer, e.g. ``net.8 (input)``; None for ``targeted``"""
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    """per-image values of the tool: node, lam and pair, target, source_pred, pred, ..."""

    @property
    def improvement(self) -> torch.Tensor:
        """Per-image gain of the objective in the optimised direction (positive is better)."""
        gain = self.after - self.before
        return gain if self.maximize else -gain

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict of numbers per image."""
        tensors = {
            f"{self.objective}_before": self.before,
            f"{self.objective}_after": self.after,
            "perturbation_norm": self.perturbation_norm,
            **self.extra,
        }
        cols = {k: v.detach().cpu().tolist() for k, v in tensors.items()}
        return [{k: v[i] for k, v in cols.items()} for i in range(self.images.shape[0])]


# ------------------------------------------------------------------------- representation layer


class _Captured(Exception):
    """Raised by the probe's hook to stop the forward pass once the layer has run."""


def resolve_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module, bool]:
    """``(name, module, use_input)`` of a representation layer of ``model``.

    ``None`` is the input of the last :class:`torch.nn.Linear` in module order (the features the
    classifier reads); a name is any entry of ``model.named_modules()`` (for a fastrobust model
    the ``net.`` prefix may be left out), whose output is used.
    """
    modules = dict(model.named_modules())
    if layer is None:
        linears = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(
                "the model has no nn.Linear to take the default representation from; "
                "set layer to a module name",
                field="layer",
            )
        return linears[-1], modules[linears[-1]], True
    for name in (layer, f"net.{layer}"):
        if name and name in modules:
            return name, modules[name], False
    valid = ", ".join(name for name in modules if name)
    raise ConfigError(f"model has no layer {layer!r}; valid layers: {valid}")


class LayerProbe(nn.Module):
    """``probe(x)`` is ``model``'s activation at one layer (the rest of the forward is skipped).

    Hooks are added for each call and removed after, so ``model`` is left as it was. Wrapping
    the model in a module lets :func:`fastrobust.attacks.pgd` manage its BatchNorm mode.
    """

    def __init__(self, model: nn.Module, layer: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.layer_name, self._module, self._use_input = resolve_layer(model, layer)

    @property
    def description(self) -> str:
        """The layer's name, marked ``(input)`` when its input is the representation."""
        return f"{self.layer_name} (input)" if self._use_input else self.layer_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def keep(value: Any) -> None:
            if not isinstance(value, torch.Tensor):
                raise ConfigError(
                    f"layer {self.layer_name!r} gives a {type(value).__name__}, not a tensor"
                )
            captured.append(value)
            raise _Captured

        if self._use_input:
            handle = self._module.register_forward_pre_hook(lambda _m, args: keep(args[0]))
        else:
            handle = self._module.register_forward_hook(lambda _m, _a, out: keep(out))
        try:
            self.model(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ConfigError(f"layer {self.layer_name!r} is not used in the model's forward pass")
        return captured[0]


def node_values(activation: torch.Tensor) -> torch.Tensor:
    """Per-node activation ``(B, nodes)``: channels averaged over positions for ``B x C x ...``."""
    if activation.dim() > 2:
        return activation.flatten(2).mean(2)
    return activation.reshape(activation.shape[0], -1)


def count_nodes(
    model: nn.Module, image_shape: Sequence[int], layer: str | None = None, *, device: Any = None
) -> int:
    """Number of nodes of a representation layer for images of ``image_shape`` (C, H, W)."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    probe = LayerProbe(model, layer)
    with attack_mode(probe, "eval"), torch.no_grad():
        act = probe(torch.zeros(1, *image_shape, device=device))
    return int(node_values(act).shape[1])


# ------------------------------------------------------------------------------------ checks


def check_images(model: nn.Module, x: torch.Tensor, what: str = "images") -> torch.Tensor:
    """``x`` as float ``N x C x H x W`` in ``[0,1]`` that fits ``model``, or DataError."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"{what} must be an N x C x H x W tensor, got shape {shape}")
    if not x.is_floating_point():
        raise DataError(f"{what} must be float images in [0,1], got dtype {x.dtype}")
    if x.numel() and (not torch.isfinite(x).all() or x.min() < -1e-6 or x.max() > 1 + 1e-6):
        raise DataError(f"{what} must lie in [0,1]")
    if x.shape[0]:
        check_model_fits(model, x, what=what)
    return x.clamp(0.0, 1.0)


def _per_image(
    values: int | Sequence[int] | torch.Tensor, x: torch.Tensor, what: str
) -> torch.Tensor:
    """One integer per image of ``x`` (a single value is repeated), or ConfigError."""
    v = torch.as_tensor(values, dtype=torch.long, device=x.device).reshape(-1)
    if v.numel() == 1:
        v = v.expand(x.shape[0]).clone()
    if v.numel() != x.shape[0]:
        raise ConfigError(f"got {v.numel()} {what} for {x.shape[0]} images")
    return v


def _check_classes(logits: torch.Tensor, target: torch.Tensor) -> None:
    k = logits.shape[1]
    bad = (target < 0) | (target >= k)
    if bad.any():
        raise ConfigError(
            f"target class {int(target[bad][0])} is out of range; the model has {k} "
            f"classes (0 to {k - 1})"
        )


# --------------------------------------------------------------------------------- optimiser


def _optimise(
    net: nn.Module,
    x0: torch.Tensor,
    y: torch.Tensor,
    *,
    threat: ThreatModel,
    budget: Budget,
    loss_fn: LossFn,
    maximize: bool,
    bn_mode: BNMode,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PGD from ``x0`` itself (start zero) on ``loss_fn``; returns ``(images, trajectory)``.
    ``progress``: a progress bar over the steps on stderr."""
    from tqdm.auto import tqdm

    assert budget.steps is not None and budget.step_size is not None  # a resolved budget
    trajectory: list[torch.Tensor] = []
    with tqdm(total=budget.steps, desc="steps", disable=not progress, leave=False) as bar:

        def record(_i: int, loss: torch.Tensor) -> None:
            trajectory.append(loss.detach().float())
            bar.update(1)

        images = pgd(
            net,
            x0,
            y,
            threat,
            steps=budget.steps,
            step_size=budget.step_size,
            start=torch.zeros_like(x0),
            targeted=not maximize,
            loss_fn=loss_fn,
            bn_mode=bn_mode,
            on_step=record,
        )
    with attack_mode(net, bn_mode), torch.no_grad():
        trajectory.append(loss_fn(net(images), y).detach().float())
    return images, torch.stack(trajectory)


def _result(
    images: torch.Tensor,
    starts: torch.Tensor,
    trajectory: torch.Tensor,
    *,
    objective: str,
    maximize: bool,
    threat: ThreatModel,
    budget: Budget,
    layer: str | None,
    extra: dict[str, torch.Tensor],
) -> RepresentResult:
    return RepresentResult(
        images=images,
        starts=starts,
        objective=objective,
        maximize=maximize,
        before=trajectory[0],
        after=trajectory[-1],
        trajectory=trajectory,
        perturbation_norm=threat.norm(images - starts),
        budget=budget,
        layer=layer,
        extra=extra,
    )


# ------------------------------------------------------------------------------ public tools


def visualize_features(
    model: nn.Module,
    seeds: torch.Tensor,
    nodes: int | Sequence[int] | torch.Tensor,
    *,
    layer: str | None = None,
    norm: Norm = "l2",
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    bn_mode: BNMode = "eval",
    progress: bool = False,
) -> RepresentResult:
    """Direct feature visualisation (Engstrom et al. 2019; Goodwin et al. 2020, Figure 3).

    From each seed image (uniform noise or a test image), ascend the activation of one node of
    the representation layer with PGD inside a large ball around the seed. ``nodes`` is one
    index for all seeds or one per seed. Robust models turn noise into a recognisable pattern;
    a standard model's result stays noise-like.
    """
    seeds = check_images(model, seeds, "seed images")
    probe = LayerProbe(model, layer)
    with attack_mode(probe, bn_mode), torch.no_grad():
        width = node_values(probe(seeds[:1])).shape[1]
    idx = _per_image(nodes, seeds, "node indices")
    bad = (idx < 0) | (idx >= width)
    if bad.any():
        raise ConfigError(
            f"node {int(idx[bad][0])} is out of range; layer {probe.description} has "
            f"{width} nodes (0 to {width - 1})"
        )
    budget = default_budget(
        "features", seeds.shape[1:], norm=norm, eps=eps, steps=steps, step_size=step_size
    )
    assert budget.eps is not None  # resolved by default_budget
    threat = threat_model(norm, budget.eps, random_start="none")

    def activation(act: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        return node_values(act).gather(1, node[:, None]).squeeze(1)

    images, traj = _optimise(
        probe,
        seeds,
        idx,
        threat=threat,
        budget=budget,
        loss_fn=activation,
        maximize=True,
        bn_mode=bn_mode,
        progress=progress,
    )
    return _result(
        images,
        seeds,
        traj,
        objective="activation",
        maximize=True,
        threat=threat,
        budget=budget,
        layer=probe.description,
        extra={"node": idx},
    )


def interpolation_starts(
    x1: torch.Tensor,
    x2: torch.Tensor,
    lambdas: Sequence[float],
    start: StartKind | torch.Tensor = "noise",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Start images for :func:`interpolate_representations`, pair-major (P*L x C x H x W)."""
    lam = torch.as_tensor(list(lambdas), dtype=x1.dtype, device=x1.device)
    n = x1.shape[0] * lam.numel()
    if isinstance(start, torch.Tensor):
        if tuple(start.shape) != (n, *x1.shape[1:]):
            raise DataError(
                f"interpolation starts must have shape {(n, *x1.shape[1:])}, "
                f"got {tuple(start.shape)}"
            )
        return start
    a = x1.repeat_interleave(lam.numel(), 0)
    b = x2.repeat_interleave(lam.numel(), 0)
    if start == "noise":
        noise = torch.rand(a.shape, generator=generator, dtype=a.dtype)
        return noise.to(a.device)
    if start == "blend":
        w = lam.repeat(x1.shape[0]).view(-1, 1, 1, 1)
        return w * a + (1 - w) * b
    if start == "x1":
        return a.clone()
    if start == "x2":
        return b.clone()
    raise ConfigError(f"unknown interpolation start {start!r}; choose noise, blend, x1 or x2")


def interpolate_representations(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    *,
    layer: str | None = None,
    start: StartKind | torch.Tensor = "noise",
    generator: torch.Generator | None = None,
    norm: Norm = "l2",
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    bn_mode: BNMode = "eval",
    progress: bool = False,
) -> RepresentResult:
    """Interpolation through representation space (Goodwin et al. 2020, Eq. 14 and Figure 4).

    For every pair ``(x1[p], x2[p])`` and every ``lam``, find
    ``x_lam = argmin_x || lam * f(x1) + (1 - lam) * f(x2) - f(x) ||_2`` (the paper's Eq. 14
    has the sign of this difference flipped) by PGD from ``start``: uniform noise (default; the
    representation alone decides the image, a representation inversion in the sense of
    Engstrom et al. 2019), the pixel blend, ``x1`` or ``x2``. Results are pair-major:
    image ``p * L + l`` is pair ``p``, ``lambdas[l]``. ``extra["relative_distance_*"]`` divides
    the distance by ``||f(x1) - f(x2)||``.
    """
    x1 = check_images(model, x1, "x1")
    x2 = check_images(model, x2, "x2")
    if x1.shape != x2.shape:
        raise DataError(
            f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    lam = torch.as_tensor(list(lambdas), dtype=x1.dtype, device=x1.device)
    if lam.numel() == 0 or not torch.isfinite(lam).all():
        raise ConfigError("need at least one finite lambda")
    probe = LayerProbe(model, layer)
    with attack_mode(probe, bn_mode), torch.no_grad():
        f1 = probe(x1).flatten(1)
        f2 = probe(x2).flatten(1)
    w = lam.repeat(x1.shape[0])[:, None]
    goal = w * f1.repeat_interleave(lam.numel(), 0) + (1 - w) * f2.repeat_interleave(lam.numel(), 0)
    scale = (f1 - f2).norm(dim=1).clamp_min(1e-12).repeat_interleave(lam.numel(), 0)
    starts = check_images(
        model, interpolation_starts(x1, x2, lambdas, start, generator=generator), "starts"
    )
    budget = default_budget(
        "interpolate", x1.shape[1:], norm=norm, eps=eps, steps=steps, step_size=step_size
    )
    assert budget.eps is not None  # resolved by default_budget
    threat = threat_model(norm, budget.eps, random_start="none")

    def distance(act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, (act.flatten(1) - target).norm(dim=1))

    images, traj = _optimise(
        probe,
        starts,
        goal,
        threat=threat,
        budget=budget,
        loss_fn=distance,
        maximize=False,
        bn_mode=bn_mode,
        progress=progress,
    )
    pair = torch.arange(x1.shape[0], device=x1.device).repeat_interleave(lam.numel())
    extra = {
        "pair": pair,
        "lam": w.squeeze(1),
        "relative_distance_before": traj[0] / scale,
        "relative_distance_after": traj[-1] / scale,
    }
    return _result(
        images,
        starts,
        traj,
        objective="distance",
        maximize=False,
        threat=threat,
        budget=budget,
        layer=probe.description,
        extra=extra,
    )


def targeted_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor,
    *,
    norm: Norm = "l2",
    eps: float | None = None,
    steps: int | None = None,
    step_size: float | None = None,
    bn_mode: BNMode = "eval",
    progress: bool = False,
) -> RepresentResult:
    """Large targeted perturbations (Goodwin et al. 2020, Figure 5; Engstrom et al. 2019).

    Targeted PGD that descends the cross-entropy of ``target`` inside a large ball around each
    image (defaults: :func:`default_budget`). A robust model's perturbations draw features of
    the target class into the image; a standard model's stay noise-like. The recorded
    objective is the target-class probability.
    """
    x = check_images(model, x)
    tgt = _per_image(target, x, "targets")
    with attack_mode(model, bn_mode), torch.no_grad():
        logits = model(x)
    _check_classes(logits, tgt)
    budget = default_budget(
        "targeted", x.shape[1:], norm=norm, eps=eps, steps=steps, step_size=step_size
    )
    assert budget.eps is not None  # resolved by default_budget
    threat = threat_model(norm, budget.eps, random_start="none")

    images, traj = _optimise(
        model,
        x,
        tgt,
        threat=threat,
        budget=budget,
        loss_fn=cross_entropy_per_sample,
        maximize=False,
        bn_mode=bn_mode,
        progress=progress,
    )
    with attack_mode(model, bn_mode), torch.no_grad():
        pred = model(images).argmax(1)
    extra = {"target": tgt, "source_pred": logits.argmax(1), "pred": pred}
    return _result(
        images,
        x,
        torch.exp(-traj),
        objective="target_prob",
        maximize=True,
        threat=threat,
        budget=budget,
        layer=None,
        extra=extra,
    )
