"""Figures 3-5 as data: the choices (live nodes, pairs across classes, sources) and the grid."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fastrobust.errors import ConfigError, DataError
from fastrobust.figure_settings import FeatureSettings, InterpolationSettings, TargetedSettings
from fastrobust.figures import (
    Budget,
    Figure,
    Panel,
    draw_figure,
    feature_figure,
    interpolation_figure,
    live_nodes,
    other_class_index,
    targeted_figure,
)
from fastrobust.model_info import ModelInfo, attach_info
from fastrobust.models import ModelSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest
BUDGET = Budget(steps=2)


class HalfDead(nn.Module):
    """A representation whose odd nodes are always zero (dead ReLUs), then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.features(x) + 5.0)  # every node live ...
        mask = torch.tensor([1.0, 0.0] * 4)  # ... but the odd ones
        return self.head(z * mask)


def _panel(label: str = "m") -> Panel:
    spec = ModelSpec("half_dead", num_classes=3, in_channels=1, image_size=8)
    model = attach_info(HalfDead().eval(), ModelInfo(spec=spec, classes=("a", "b", "c")))
    return Panel(label, model, f"{label}.pt")


def _data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 3


def test_live_nodes_are_the_active_ones():
    panel = _panel()
    seeds = torch.rand(2, 1, 8, 8)
    chosen = live_nodes(panel.model, seeds, 4, generator=torch.Generator().manual_seed(0))
    assert sorted(chosen.tolist()) == [0, 2, 4, 6]
    # asking for more than are live draws from every node
    assert len(live_nodes(panel.model, seeds, 6)) == 6


def test_other_class_index():
    y = torch.tensor([0, 0, 1, 0])
    g = torch.Generator().manual_seed(0)
    assert {other_class_index(y, 0, g) for _ in range(10)} == {2}
    with pytest.raises(DataError, match="other than 1"):
        other_class_index(torch.tensor([1, 1]), 1, g)


def test_feature_figure_rows_captions_and_records():
    settings = FeatureSettings(nodes=2, num_seeds=2)
    fig = feature_figure([_panel("a"), _panel("b")], _data()[0], settings, budget=BUDGET)
    assert isinstance(fig, Figure) and fig.tool == "features"
    assert fig.row_labels == ["a / seed 0", "a / seed 1", "b / seed 0", "b / seed 1"]
    assert [len(r) for r in fig.rows] == [3] * 4  # the seed, then one image per node
    assert fig.captions is not None and fig.captions[0][0] == "seed"
    assert len(fig.records) == fig.num_images == 8
    assert all(r["node"] % 2 == 0 for r in fig.records)  # only live nodes are drawn
    assert fig.records[0]["model"] == "a" and fig.records[0]["checkpoint"] == "a.pt"
    with pytest.raises(ConfigError, match=r"^features\.nodes must be >= 1, got 0$") as info:
        FeatureSettings(nodes=0)
    assert info.value.field == "features.nodes"


def test_interpolation_pairs_cross_classes():
    x, y = _data()
    settings = InterpolationSettings(pairs=3, lambdas=[0.25, 0.75])
    fig = interpolation_figure([_panel()], x, y, settings, budget=BUDGET)
    assert fig.col_labels == ["x1", "lam=0.75", "lam=0.25", "x2"]
    assert len(fig.rows) == 3 and all(len(r) == 4 for r in fig.rows)
    for rec in fig.records:
        assert y[rec["x1"]] != y[rec["x2"]]
    settings = InterpolationSettings(pairs=2, lambdas=[0.5])
    consecutive = interpolation_figure(
        [_panel()], x, None, settings, consecutive_pairs=True, budget=BUDGET
    )
    assert [(r["x1"], r["x2"]) for r in consecutive.records] == [(0, 1), (2, 3)]
    with pytest.raises(DataError, match="labels"):
        interpolation_figure([_panel()], x, None, budget=BUDGET)


def test_targeted_sources_are_of_other_classes():
    x, y = _data()
    fig = targeted_figure([_panel()], x, y, TargetedSettings(per_target=2), budget=BUDGET, seed=3)
    assert fig.row_labels == ["original", "m"]
    assert [r["target"] for r in fig.records] == [0, 0, 1, 1, 2, 2]
    assert all(r["source_label"] != r["target"] for r in fig.records)
    assert fig.col_labels[0].endswith("->a")
    with pytest.raises(ConfigError, match="target class 3"):
        targeted_figure([_panel()], x, y, TargetedSettings(targets=[3]), budget=BUDGET)


def test_same_seed_same_figure():
    x, y = _data()
    a = targeted_figure([_panel()], x, y, budget=BUDGET, seed=1)
    b = targeted_figure([_panel()], x, y, budget=BUDGET, seed=1)
    assert [r["source_index"] for r in a.records] == [r["source_index"] for r in b.records]
    assert torch.equal(a.results[0].images, b.results[0].images)


def test_draw_figure_is_each_tool_with_its_settings():
    """The one entry the command line and the study share: the tool's own figure."""
    x, y = _data()
    drawn = draw_figure("targeted", [_panel()], x, y, TargetedSettings(), budget=BUDGET, seed=1)
    direct = targeted_figure([_panel()], x, y, budget=BUDGET, seed=1)
    assert torch.equal(drawn.results[0].images, direct.results[0].images)
    assert (
        draw_figure("features", [_panel()], x, y, FeatureSettings(nodes=1), budget=BUDGET).tool
        == "features"
    )
    with pytest.raises(ConfigError, match="no figure 'features' with TargetedSettings"):
        draw_figure("features", [_panel()], x, y, TargetedSettings(), budget=BUDGET)


def test_one_budget_checks_its_values_and_scales_to_the_image():
    from fastrobust import represent

    assert Budget is represent.Budget  # figures and represent share one budget
    with pytest.raises(ConfigError, match=r"^budget\.steps must be a finite number > 0, got 0$"):
        Budget(steps=0)
    resolved = Budget(norm="linf").resolve("features", (1, 8, 8))
    assert (resolved.eps, resolved.steps, resolved.norm) == (1.0, 200, "linf")
    assert Budget(eps=2.0, steps=4).resolve("targeted", (1, 8, 8)).step_size == 2.5 * 2.0 / 4
