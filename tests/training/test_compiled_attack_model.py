"""A compiled attack model computes input gradients only (issue 20, item 1).

Under AOTAutograd a compiled module's backward is one graph returning the gradient of every
input that requires one; an attack's ``autograd.grad(loss, x)`` then also computed every weight
gradient and threw it away. The backward graphs are captured here with an ``aot_autograd``
backend that compiles nothing (no C++ compiler needed) and read node by node.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from conftest import small_bn_cnn, tiny_config
from fastrobust.attacks.contract import (
    InputGradientsOnly,
    cross_entropy_per_sample,
    input_gradient,
    trainable_module,
)
from fastrobust.training.build import build
from fastrobust.training.config import AttackConfig
from fastrobust.training.methods import build_method
from fastrobust.training.preflight import preflight

aot = pytest.importorskip("torch._dynamo.backends.common")


class CapturingBackend:
    """A torch.compile backend keeping AOTAutograd's backward graphs (run uncompiled)."""

    def __init__(self) -> None:
        from functorch.compile import make_boxed_func

        self.backward_graphs: list[torch.fx.GraphModule] = []

        def forward_compiler(gm: torch.fx.GraphModule, _: Any) -> Any:
            return make_boxed_func(gm.forward)

        def backward_compiler(gm: torch.fx.GraphModule, _: Any) -> Any:
            self.backward_graphs.append(gm)
            return make_boxed_func(gm.forward)

        self.backend = aot.aot_autograd(fw_compiler=forward_compiler, bw_compiler=backward_compiler)


def conv_backward_masks(gm: torch.fx.GraphModule) -> list[list[bool]]:
    """``output_mask`` (input, weight, bias) of every ``convolution_backward`` in ``gm``."""
    return [
        list(node.args[-1])  # type: ignore[arg-type]
        for node in gm.graph.nodes
        if node.op == "call_function" and "convolution_backward" in str(node.target)
    ]


def weight_gradient_outputs(gm: torch.fx.GraphModule, parameter_count: int) -> int:
    """How many of the backward graph's returned gradients are not None, beyond the input's."""
    (returned,) = gm.graph.find_nodes(op="output")[0].args
    return sum(g is not None for g in returned) - 1 if parameter_count else 0


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    ).eval()


def _attack_gradient(model: nn.Module, compiled: Any) -> torch.Tensor:
    torch.manual_seed(1)
    x, y = torch.rand(6, 1, 8, 8), torch.randint(0, 10, (6,))
    grad, _, _ = input_gradient(compiled, x, y, cross_entropy_per_sample)
    return grad


def test_plain_compile_computes_weight_gradients_the_attack_discards():
    """The mechanism of the finding (what the trainer did before): shows the test can fail."""
    model, capture = _model(), CapturingBackend()
    _attack_gradient(model, torch.compile(model, backend=capture.backend))
    (gm,) = capture.backward_graphs
    assert any(mask[1] for mask in conv_backward_masks(gm))
    assert all(p.grad is None for p in model.parameters())  # computed, then discarded


def test_compiled_attack_model_backward_has_input_gradient_only():
    model, capture = _model(), CapturingBackend()
    compiled = torch.compile(InputGradientsOnly(model), backend=capture.backend)
    grad = _attack_gradient(model, compiled)
    (gm,) = capture.backward_graphs
    masks = conv_backward_masks(gm)
    assert len(masks) == 2 and all(mask == [True, False, False] for mask in masks)
    assert weight_gradient_outputs(gm, len(list(model.parameters()))) == 0
    assert "aten.mm.default" in {str(n.target) for n in gm.graph.nodes}  # the linear's input
    # the same gradient as the eager model, and the wrapper sees in-place weight updates
    torch.testing.assert_close(grad, _attack_gradient(model, model))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    torch.testing.assert_close(_attack_gradient(model, compiled), _attack_gradient(model, model))


def test_gradalign_penalty_trains_the_weights_behind_a_compiled_attack_model():
    torch.manual_seed(2)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    method = build_method(AttackConfig(method="gradalign", eps=1.0, gradalign_lambda=5.0))
    grads = []
    for compiled in (False, True):
        model = small_bn_cnn()  # the same weights and BatchNorm statistics each time
        attack_model = model
        if compiled:
            backend = CapturingBackend().backend
            attack_model = torch.compile(InputGradientsOnly(model), backend=backend)
            assert trainable_module(attack_model) is model
        torch.manual_seed(3)
        loss, _ = method.loss(model, attack_model, x, y)
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(g is not None for g in grads[1])
    for eager, compiled_grad in zip(*grads, strict=True):
        torch.testing.assert_close(eager, compiled_grad)


def test_a_compiled_run_attacks_through_input_gradients_only(tmp_path, digits):
    """``runtime.compile``: the training attack runs on the compiled wrapper (built lazily)."""
    parts = build(preflight(tiny_config(tmp_path, compile=True), dataset=digits))
    inner = getattr(parts.attack_model, "_orig_mod", None)
    assert isinstance(inner, InputGradientsOnly) and inner.model is parts.model
