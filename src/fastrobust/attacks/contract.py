"""What every attack shares: the model mode, input gradients, the loss, "fooled", the step size.

An attack in fastrobust is a function ``attack(model, x, y, threat, *, start=..., ...) -> x_adv``
over images ``x`` in ``[0,1]`` (docs/architecture.md says where to add one). It

* runs ``model`` (any callable; an :class:`torch.nn.Module` gets a stated BatchNorm mode through
  :func:`attack_mode`, restored after) and never updates BatchNorm running statistics;
* takes gradients with respect to the input only (:func:`input_gradient`; a compiled model is
  compiled around :class:`InputGradientsOnly` so that its backward graph holds no weight
  gradients either);
* starts from an explicit perturbation ``start``, or from the threat model's random start
  (``threat.sample``) when ``start`` is None;
* returns ``x + delta`` with ``delta`` projected into the threat model;
* with restarts, keeps the worst case per sample through
  :func:`fastrobust.attacks.restarts.worst_case_over_restarts`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import nn

from fastrobust.errors import ConfigError

log = logging.getLogger(__name__)

#: anything mapping a batch of ``[0,1]`` images to a batch of logits
Model = Callable[[torch.Tensor], torch.Tensor]
#: a loss returning one value per sample, ``loss_fn(model(x_adv), y) -> (B,)``; attacks ascend
#: it (descend it when ``targeted``)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
BNMode = Literal["eval", "train"]

#: PGD step size as a multiple of ``eps / steps`` (Madry et al. 2018): the whole radius is
#: reachable with room to move along its surface
PGD_STEP_FACTOR = 2.5


def pgd_step_size(eps: float, steps: int, factor: float = PGD_STEP_FACTOR) -> float:
    """The PGD step size ``factor * eps / steps`` (Madry et al. 2018; Goodwin et al. 2020)."""
    return factor * eps / max(steps, 1)


def cross_entropy_per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with one value per sample (the default attack loss)."""
    return torch.nn.functional.cross_entropy(logits, y, reduction="none")


def is_fooled(logits: torch.Tensor, y: torch.Tensor, *, targeted: bool = False) -> torch.Tensor:
    """Per-sample bool: misclassified (untargeted), or classified as the target ``y`` (targeted)."""
    pred = logits.argmax(1)
    return pred == y if targeted else pred != y


@contextlib.contextmanager
def attack_mode(model: Model, bn_mode: BNMode = "eval") -> Iterator[None]:
    """Run ``model`` in the requested BatchNorm mode, restoring every module's state after.

    ``eval`` uses running statistics (the paper's code); ``train`` uses batch statistics but
    switches off ``track_running_stats`` so the running statistics are never touched. A model
    that is not an :class:`torch.nn.Module` (a plain function) has no mode to set.
    """
    if bn_mode not in ("eval", "train"):
        raise ConfigError(f"bn_mode must be 'eval' or 'train', got {bn_mode!r}")
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    tracked: list[tuple[nn.modules.batchnorm._BatchNorm, bool]] = []
    try:
        model.train(bn_mode == "train")
        if bn_mode == "train":
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    tracked.append((m, m.track_running_stats))
                    m.track_running_stats = False
        yield
    finally:
        for m, flag in tracked:
            m.track_running_stats = flag
        for m, was_training in modes:
            m.training = was_training


#: the constant the attack loss is multiplied by before an input gradient is taken under fp16
#: autocast (and the gradient divided by after, in fp32): a confident sample's loss gradient
#: (1 - p_max ~ 1e-6) times the weights falls below fp16's smallest subnormal (6e-8) and the
#: whole input gradient became exactly zero; the per-sample gradients of an attack are
#: independent, so this bounds the scaled ones by 2**10 times the largest true one, far below
#: fp16's 65504 (a constant: no host sync, unlike a GradScaler)
FP16_GRADIENT_SCALE = 2.0**10


def gradient_scale(x: torch.Tensor) -> float:
    """:data:`FP16_GRADIENT_SCALE` while fp16 autocast is on for ``x``'s device, else 1."""
    device = x.device.type
    fp16 = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16
    return FP16_GRADIENT_SCALE if fp16 else 1.0


def input_gradient(
    model: Model,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    *,
    targeted: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of the (signed) attack loss w.r.t. the input only; also returns output and loss.

    Under fp16 autocast the loss is scaled by :data:`FP16_GRADIENT_SCALE` for the backward and
    the gradient unscaled after, so confident samples keep a non-zero gradient.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    scale = gradient_scale(x_adv)
    with torch.enable_grad():
        out = model(x_adv)
        loss = loss_fn(out, y)
        objective = -loss.sum() if targeted else loss.sum()
        (grad,) = torch.autograd.grad(objective * scale if scale != 1.0 else objective, x_adv)
    return (grad / scale if scale != 1.0 else grad), out.detach(), loss.detach()


class InputGradientsOnly(nn.Module):
    """``model`` run with its parameters detached, so no backward through it computes weight
    gradients.

    Eager autograd computes only what ``autograd.grad(loss, x)`` needs, but a compiled model's
    backward (AOTAutograd) is one graph that returns the gradient of every input requiring one:
    every attack step then also computed, and discarded, all weight gradients
    (``convolution_backward`` with ``output_mask=[True, True, True]``), about one
    forward-equivalent more per step. Detached parameters share storage with the model's, so
    the wrapped model always sees the current weights; the attack model of a compiled run is
    ``torch.compile(InputGradientsOnly(model))``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        detached = {name: p.detach() for name, p in self.model.named_parameters()}
        out: torch.Tensor = torch.func.functional_call(self.model, detached, (x,))
        return out


def trainable_module(model: Model) -> Model:
    """The module whose parameters get gradients behind ``model``: without the
    ``torch.compile`` wrapper and :class:`InputGradientsOnly` (GradAlign's penalty, which is
    differentiated w.r.t. the weights, runs on it)."""
    model = getattr(model, "_orig_mod", model)
    return model.model if isinstance(model, InputGradientsOnly) else model


@torch.no_grad()
def fools(
    model: Model, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor, *, targeted: bool = False
) -> torch.Tensor:
    """Per-sample bool: does ``x + delta`` fool ``model`` (one forward pass, see :func:`is_fooled`)."""
    return is_fooled(model(x + delta), y, targeted=targeted)


def target_classes(logits: torch.Tensor, y: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` classes other than ``y`` with the highest logits, best first (B x count).

    AutoAttack's choice of targets for APGD-T and FAB-T; ``count`` must be at most classes - 1
    (see :func:`clip_target_count`).
    """
    masked = logits.detach().scatter(1, y[:, None], -math.inf)
    return masked.topk(count, dim=1).indices


def clip_target_count(count: int, classes: int) -> int:
    """``count`` clipped to ``classes - 1`` (with a logged warning); ConfigError if < 1."""
    if count < 1:
        raise ConfigError(f"the number of target classes must be >= 1, got {count}")
    if classes < 2:
        raise ConfigError(f"a targeted attack needs at least 2 classes, the model has {classes}")
    if count > classes - 1:
        log.warning(
            "%d target classes asked for but the model has %d classes: using %d",
            count,
            classes,
            classes - 1,
        )
        return classes - 1
    return count


def looks_like_probabilities(logits: torch.Tensor) -> bool:
    """Are these rows probabilities (non-negative, summing to 1) rather than logits?"""
    sums = logits.sum(1)
    return bool((logits >= 0).all() and torch.allclose(sums, torch.ones_like(sums), atol=1e-4))
