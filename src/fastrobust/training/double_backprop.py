"""Cheaper double backpropagation through 2-D convolutions, for GradAlign's penalty.

GradAlign (Andriushchenko & Flammarion 2020) differentiates an input gradient with respect to
the weights. PyTorch's generic second derivative of a convolution
(``_convolution_double_backward``) computes the weight part as a convolution of transposed
tensors, which on a CPU costs about twice the ordinary weight-gradient kernel. The input
gradient of ``y = conv(x, w)`` is ``g_x = conv_backward_input(g_y, w)``, linear in both ``g_y``
and ``w``, so its own derivatives are two ordinary kernels: ``d/dg_y`` is the convolution
forward applied to the incoming gradient, and ``d/dw`` is the ordinary weight gradient with the
incoming gradient in the place of the input.

:func:`cheap_conv_double_backward` is a context manager under which ``F.conv2d`` (what
``nn.Conv2d`` calls) runs as a custom autograd function that takes exactly those kernels. The
forward pass and the first input gradient are computed by the same kernels as without it (the
input gradient is bitwise the same); second derivatives agree up to float rounding
(tests/training/test_double_backprop.py checks both against PyTorch's own in float64).

Scope: inside it, a gradient taken with ``create_graph=True`` yields the *input* gradient of
each convolution only: the first-order weight gradient is not built (it comes back as None), so
use it only, as GradAlign does, to ask ``torch.autograd.grad`` for an input gradient; a later ordinary backward through the
same graph computes the weight and input gradients as usual. Autocast, string padding and
non-4-D inputs fall through to ``F.conv2d`` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.autograd.function import once_differentiable
from torch.overrides import TorchFunctionMode

#: stride, padding, dilation (each two ints) and groups of one convolution.
ConvGeometry = tuple[list[int], list[int], list[int], int]

_ARG_NAMES = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_DEFAULTS: dict[str, Any] = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}


def _convolution_backward(
    grad_out: torch.Tensor,
    inp: torch.Tensor,
    weight: torch.Tensor,
    geometry: ConvGeometry,
    mask: Sequence[bool],
    bias: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """PyTorch's own convolution backward kernel, computing the gradients ``mask`` asks for."""
    stride, padding, dilation, groups = geometry
    return cast(
        tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
        torch.ops.aten.convolution_backward(
            grad_out,
            inp,
            weight,
            [weight.shape[0]] if bias else None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            list(mask),
        ),
    )


class _ConvInputGradient(Function):
    """``g_x = conv_backward_input(g_y, w)`` with its derivatives as two ordinary kernels."""

    @staticmethod
    def forward(
        ctx: Any, grad_out: torch.Tensor, weight: torch.Tensor, inp: torch.Tensor, geometry: Any
    ) -> torch.Tensor:
        ctx.save_for_backward(grad_out, weight, inp)
        ctx.geometry = geometry
        grad_in = _convolution_backward(grad_out, inp, weight, geometry, (True, False, False))[0]
        return cast(torch.Tensor, grad_in)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, incoming: torch.Tensor) -> tuple[Any, ...]:
        grad_out, weight, _ = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        d_grad_out = d_weight = None
        if ctx.needs_input_grad[0]:
            d_grad_out = F.conv2d(incoming, weight, None, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            d_weight = _convolution_backward(
                grad_out, incoming, weight, ctx.geometry, (False, True, False)
            )[1]
        return d_grad_out, d_weight, None, None


class _Conv2d(Function):
    """``F.conv2d`` whose backward builds a cheap-to-differentiate input gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        inp: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        geometry: Any,
    ) -> torch.Tensor:
        ctx.save_for_backward(inp, weight)
        ctx.geometry = geometry
        ctx.has_bias = bias is not None
        stride, padding, dilation, groups = geometry
        return F.conv2d(inp, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        inp, weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the differentiable input gradient only
            grad_in = None
            if ctx.needs_input_grad[0]:
                grad_in = _ConvInputGradient.apply(  # type: ignore[no-untyped-call]  # torch stubs
                    grad_out, weight, inp, ctx.geometry
                )
            return grad_in, None, None, None
        want = ctx.needs_input_grad[:3]
        grads = _convolution_backward(
            grad_out,
            inp,
            weight,
            ctx.geometry,
            (want[0], want[1], want[2] and ctx.has_bias),
            bias=ctx.has_bias,
        )
        return grads[0], grads[1], grads[2] if ctx.has_bias else None, None


def _pair(value: int | Sequence[int]) -> list[int]:
    return (
        [int(v) for v in value] if isinstance(value, (tuple, list)) else [int(cast(int, value))] * 2
    )


def _conv_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    bound = dict(_DEFAULTS)
    bound.update(zip(_ARG_NAMES, args))
    bound.update(kwargs)
    return bound


def _handled(a: dict[str, Any]) -> bool:
    inp, weight = a["input"], a["weight"]
    return (
        isinstance(inp, torch.Tensor)
        and inp.dim() == 4
        and not isinstance(a["padding"], str)
        and inp.dtype == weight.dtype
        and not torch.is_autocast_enabled(inp.device.type)
    )


class _CheapConvMode(TorchFunctionMode):
    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is F.conv2d:
            a = _conv_arguments(args, kwargs)
            if _handled(a):
                geometry = (
                    _pair(a["stride"]),
                    _pair(a["padding"]),
                    _pair(a["dilation"]),
                    int(a["groups"]),
                )
                return _Conv2d.apply(  # type: ignore[no-untyped-call]  # torch stubs: untyped
                    a["input"], a["weight"], a["bias"], geometry
                )
        return func(*args, **kwargs)


@contextmanager
def cheap_conv_double_backward(enabled: bool = True) -> Iterator[None]:
    """Run ``F.conv2d`` so that differentiating its input gradient takes ordinary kernels
    (see the module docstring); ``enabled=False`` does nothing."""
    with _CheapConvMode() if enabled else nullcontext():
        yield
