"""The cheap convolution double backward agrees with PyTorch's own, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastrobust.training.double_backprop import cheap_conv_double_backward
from fastrobust.training.perturbations import cosine_per_sample, gradalign_terms


def _net(padding: int | str = 1) -> nn.Module:
    """Convolutions with every geometry the function takes: stride, dilation, groups, bias."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=padding, bias=True),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False),
        nn.Softplus(),
        nn.Conv2d(8, 6, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    ).double()


def _penalty_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cheap: bool
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The input gradient at ``x`` (create_graph) and the weights' gradient of a penalty on it."""
    model.zero_grad()
    reference = torch.randn_like(x, generator=torch.Generator().manual_seed(3))
    x = x.clone().requires_grad_(True)
    with cheap_conv_double_backward(cheap):
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    (1 - cosine_per_sample(reference, grad)).mean().backward()
    return grad.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_second_derivatives_match_pytorch(mode: str):
    model = _net()
    model.train(mode == "train")
    x = torch.rand(4, 3, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    grad_native, weights_native = _penalty_gradients(model, x, y, cheap=False)
    grad_cheap, weights_cheap = _penalty_gradients(model, x, y, cheap=True)
    assert torch.equal(grad_native, grad_cheap)  # the same kernels for the first derivative
    for native, cheap in zip(weights_native, weights_cheap):
        assert native.abs().max() > 0  # every weight gets a second-order gradient
        torch.testing.assert_close(cheap, native, rtol=1e-10, atol=1e-12)


def test_an_ordinary_backward_inside_it_is_unchanged():
    model = _net()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([4, 0, 1])
    grads = []
    for cheap in (False, True):
        model.zero_grad()
        with cheap_conv_double_backward(cheap):
            F.cross_entropy(model(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for native, cheap in zip(*grads):
        torch.testing.assert_close(cheap, native, rtol=1e-12, atol=1e-14)


def test_string_padding_falls_through_to_pytorch():
    model = _net(padding="same")
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    y = torch.tensor([1, 2])
    _, native = _penalty_gradients(model, x, y, cheap=False)
    _, cheap = _penalty_gradients(model, x, y, cheap=True)
    for a, b in zip(native, cheap):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_gradalign_penalty_gradient_is_pytorchs():
    """GradAlign's penalty, which runs under the cheap double backward, differentiates to the
    same weight gradient as the penalty built from PyTorch's own second derivatives."""
    model = _net().eval()
    x = torch.rand(4, 3, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3])
    eta = 0.05 * torch.randn_like(x)
    model.zero_grad()
    penalty, _ = gradalign_terms(model, x, y, eta)
    penalty.backward()
    ours = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    clean = x.clone().requires_grad_(True)
    (g_clean,) = torch.autograd.grad(F.cross_entropy(model(clean), y, reduction="sum"), clean)
    noisy = (x + eta).requires_grad_(True)
    loss = F.cross_entropy(model(noisy), y, reduction="sum")
    (g_noisy,) = torch.autograd.grad(loss, noisy, create_graph=True)
    expected = (1 - cosine_per_sample(g_clean, g_noisy)).mean()
    torch.testing.assert_close(penalty.detach(), expected.detach(), rtol=1e-12, atol=1e-14)
    expected.backward()
    for a, b in zip(ours, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
