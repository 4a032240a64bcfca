"""Kernel settings per job (issue 20, items 5-7): evaluation in IEEE fp32 without cuDNN
autotuning, recorded; training autotunes, or runs deterministic kernels; static-shape compile.

The flags are read from inside the model's forward pass, so the tests see what the kernels of
the job would see (on a CPU the flags change no arithmetic, but they are set all the same)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from conftest import tiny_config
from fastrobust.evaluation.curve import robustness_curve
from fastrobust.evaluation.results import RobustnessCurve
from fastrobust.evaluation.settings import CurveSettings
from fastrobust.kernels import fp32_precision, kernel_record, kernel_settings
from fastrobust.training.setup import compile_static
from fastrobust.training.trainer import fit


class FlagRecorder(nn.Module):
    """A tiny digits classifier recording the kernel flags of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.seen: list[dict[str, Any]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(kernel_record() | {"training": self.training})
        return self.net(x)


@pytest.fixture
def tf32_everywhere():
    """The process as a user may leave it: TF32 for matrix products and convolutions."""
    with kernel_settings(tf32=True, benchmark=True) as record:
        yield record


def test_evaluation_runs_in_ieee_fp32_without_autotuning_and_records_it(tf32_everywhere, points):
    assert tf32_everywhere["fp32_conv"] == "tf32" and tf32_everywhere["cudnn_benchmark"]
    model = FlagRecorder().eval()
    settings = CurveSettings(steps=2, restarts=1, checks=False)
    curve = robustness_curve(model, points, "l2", [0.0, 0.5], settings)
    inside = {(s["fp32_matmul"], s["fp32_conv"], s["cudnn_benchmark"]) for s in model.seen}
    assert inside == {("ieee", "ieee", False)}
    assert curve.kernels["fp32_conv"] == "ieee" and curve.kernels["cudnn_benchmark"] is False
    assert RobustnessCurve.from_dict(curve.to_dict()).kernels == curve.kernels
    assert fp32_precision() == {"matmul": "tf32", "conv": "tf32"}  # restored after
    assert torch.backends.cudnn.benchmark

    model.seen.clear()
    curve = robustness_curve(
        model, points, "l2", [0.5], CurveSettings(steps=1, restarts=1, checks=False, tf32=True)
    )
    assert {s["fp32_conv"] for s in model.seen} == {"tf32"} and curve.kernels["fp32_conv"] == "tf32"


@pytest.mark.parametrize("deterministic", [False, True])
def test_training_autotunes_unless_deterministic(tmp_path, digits, deterministic):
    net = FlagRecorder()
    cfg = tiny_config(tmp_path, epochs=1, method="standard", deterministic=deterministic)
    assert not torch.are_deterministic_algorithms_enabled()
    fit(cfg, net=net, dataset=digits)
    during = [s for s in net.seen if s["training"]]
    assert during and all(s["deterministic"] is deterministic for s in during)
    assert all(s["cudnn_benchmark"] is not deterministic for s in during)
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run
    assert not torch.backends.cudnn.benchmark


def test_compile_for_training_keeps_static_shapes_for_a_partial_last_batch():
    """``automatic_dynamic_shapes`` made the last partial batch's recompile dynamic, and that
    dynamic graph then served every batch; with static shapes each shape keeps its own."""
    graphs: dict[str, list[torch.fx.GraphModule]] = {"static": [], "default": []}

    def backend_for(kind: str) -> Any:
        def backend(gm: torch.fx.GraphModule, example_inputs: Any) -> Any:
            graphs[kind].append(gm)
            return gm.forward

        return backend

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    batches = [torch.rand(batch, 1, 8, 8) for batch in (16, 16, 5, 16)]
    torch._dynamo.reset()
    default = torch.compile(model, backend=backend_for("default"))
    for x in batches:
        default(x)
    torch._dynamo.reset()  # the dynamic-shape decision is kept per code object
    static = compile_static(model, backend=backend_for("static"))
    for x in batches:
        torch.testing.assert_close(static(x), model(x))
    torch._dynamo.reset()

    def dynamic(gm: torch.fx.GraphModule) -> bool:
        return any(
            isinstance(size, torch.SymInt)
            for node in gm.graph.nodes
            if node.op == "placeholder" and isinstance(node.meta.get("example_value"), torch.Tensor)
            for size in node.meta["example_value"].shape
        )

    assert any(dynamic(gm) for gm in graphs["default"])  # the finding's mechanism
    assert len(graphs["static"]) == 2 and not any(dynamic(gm) for gm in graphs["static"])
