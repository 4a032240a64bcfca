"""One optimiser step of adversarial training, and the autocast context it runs in.

Per batch: the training method perturbs the batch on the *unwrapped* model (input gradients
only), then the loss of the perturbed batch goes through the (possibly DDP-wrapped) model for
the weight update (Goodwin et al. 2020, Algorithm 1). Nothing here syncs with the host, except
under ``amp="fp16"``: the GradScaler reads whether the weight gradients are finite on the host
every step (``scaler.step``) to skip the update when they are not. The attacks' input gradients
under fp16 use a constant loss scale instead (:data:`fastrobust.attacks.contract.FP16_GRADIENT_SCALE`),
which needs no such check; bf16 needs neither.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from fastrobust.errors import ConfigError
from fastrobust.training.methods import TrainingMethod

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(amp: str, device: torch.device) -> AbstractContextManager[Any]:
    """Autocast to ``amp`` (none | bf16 | fp16) on ``device``; a no-op for ``none``."""
    if amp == "none":
        return nullcontext()
    if amp not in AMP_DTYPES:
        raise ConfigError(f"amp must be none, bf16 or fp16, got {amp!r}")
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def training_step(
    train_model: nn.Module,
    attack_model: nn.Module,
    method: TrainingMethod,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    scaler: torch.amp.GradScaler | None = None,
    autocast: AbstractContextManager[Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on ``method``'s loss of ``(x, y)``; returns the (device) loss and
    logits, detached. The attack runs on ``attack_model`` (the unwrapped module: no DDP
    all-reduce); the weight update goes through ``train_model``."""
    with autocast if autocast is not None else nullcontext():
        loss, logits = method.loss(train_model, attack_model, x, y)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()  # type: ignore[no-untyped-call]  # Tensor.backward untyped
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()  # type: ignore[no-untyped-call]  # torch: Tensor.backward untyped
        optimizer.step()
    return loss.detach(), logits.detach()
