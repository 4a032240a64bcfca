"""Input gradients under fp16 autocast do not underflow to zero (issue 20, item 2).

A confident sample's loss gradient at the logits (1 - p_max ~ 1e-6) times the weights of the
layers below falls under fp16's smallest subnormal, and without loss scaling the whole input
gradient was exactly zero: the attack step then did nothing. CPU autocast supports float16, so
the mechanism runs here: a linear model whose logit margins put 1 - p_max between 1e-7 and 1e-4.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fastrobust.attacks.contract import cross_entropy_per_sample, gradient_scale, input_gradient
from fastrobust.attacks.threat import L2
from fastrobust.training.perturbations import gradalign_terms


def _confident_model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    linear = nn.Linear(64, 10)
    with torch.no_grad():
        linear.weight.mul_(0.02)
    model = nn.Sequential(nn.Flatten(), linear)
    x = torch.rand(64, 1, 8, 8)
    y = torch.arange(64) % 10
    with torch.no_grad():  # margin m: 1 - p_max ~ 9 exp(-m) from 1.4e-4 to 1e-6
        margin = torch.linspace(11.0, 16.0, 64)
        logits = model(x)
        shift = torch.zeros(64, 10).scatter(1, y[:, None], margin[:, None])
        offset = shift - logits.detach() + logits.mean(1, keepdim=True)
    # per-sample confident logits: the bias is a per-sample input of a second path
    confident = _Shifted(model, offset)
    return confident, x, y


class _Shifted(nn.Module):
    """``model(x) + offset`` (offset per sample, fixed): logits with chosen margins."""

    def __init__(self, model: nn.Module, offset: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("offset", offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.offset.to(x.device)


def _zero_share(grad: torch.Tensor) -> float:
    return float((grad.flatten(1).abs().amax(1) == 0).float().mean())


def _raw_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """What the attacks did before: ``autograd.grad`` of the unscaled loss."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(cross_entropy_per_sample(model(x), y).sum(), x)
    return grad


def test_fp16_autocast_input_gradients_are_scaled_not_zero():
    model, x, y = _confident_model_and_batch()
    fp32, _, _ = input_gradient(model, x, y, cross_entropy_per_sample)
    assert _zero_share(fp32) == 0.0
    exact, _, _ = input_gradient(
        copy.deepcopy(model).double(), x.double(), y, cross_entropy_per_sample
    )
    with torch.autocast("cpu", dtype=torch.float16):
        assert gradient_scale(x) > 1.0
        unscaled = _raw_gradient(model, x, y)
        fp16, _, _ = input_gradient(model, x, y, cross_entropy_per_sample)
    assert _zero_share(unscaled) > 0.25  # the finding: a quarter and more lost their gradient
    assert _zero_share(fp16) == 0.0
    assert fp16.dtype == torch.float32
    cosine = nn.functional.cosine_similarity(fp16.double().flatten(1), exact.flatten(1), dim=1)
    assert float(cosine.min()) > 0.95  # the true gradient (float64's), not only a non-zero one
    ratio = fp16.double().flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
    assert float((ratio - 1).abs().max()) < 0.1  # and unscaled back to its size
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gradient_scale(x) == 1.0  # bf16 has fp32's range


def test_gradalign_gradients_under_fp16_are_not_zero():
    model, x, y = _confident_model_and_batch()
    eta = L2(0.1).sample(x, generator=torch.Generator().manual_seed(0))
    _, fp32 = gradalign_terms(model, x, y, eta)
    with torch.autocast("cpu", dtype=torch.float16):
        penalty, fp16 = gradalign_terms(model, x, y, eta)
    assert _zero_share(fp16) == 0.0 and torch.isfinite(penalty)
    cosine = nn.functional.cosine_similarity(fp16.flatten(1), fp32.flatten(1), dim=1)
    assert float(cosine.min()) > 0.95
    assert float(fp16.norm() / fp32.norm()) == pytest.approx(1.0, rel=0.1)
