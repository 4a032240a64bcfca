"""Typed settings of the paper's Figures 3-5: one class per visualisation, and the command's.

``fastrobust visualize TOOL`` builds its flags from the tool's class, from
:class:`~fastrobust.represent.Budget` (the optimisation) and from :class:`VisualizeCommand`
(where images come from, where results go); the study's ``figures`` section is a subclass of
the first two (:class:`fastrobust.study.config.FiguresSection`), so every default is written
here once. Each class checks its values when built and names a wrong one by its field
(``features.nodes must be >= 1, got 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastrobust.represent import DEFAULT_LAMBDAS, StartKind
from fastrobust.settings import at_least, check_settings, non_negative, setting


@dataclass
class FeatureSettings:
    """Feature visualisation (Figure 3): from a seed, ascend one node's activation."""

    layer: str | None = None
    """module name (default: input of the final nn.Linear)"""
    nodes: int = setting(8, rule=at_least(1))
    """number of nodes drawn at random (the same for every model)"""
    node: list[int] | None = setting(None, rule=non_negative(), spaced=True)
    """these node indices instead"""
    seed_image: Literal["noise", "test"] = "noise"
    """start from uniform noise or test images"""
    num_seeds: int = setting(1, rule=at_least(1))
    """seed images"""

    def __post_init__(self) -> None:
        check_settings(self, "features")


@dataclass
class InterpolationSettings:
    """Interpolation (Figure 4, Eq. 14): x whose representation is closest to
    lam*f(x1) + (1-lam)*f(x2)."""

    layer: str | None = None
    """module name (default: input of the final nn.Linear)"""
    lambdas: list[float] = setting(factory=lambda: list(DEFAULT_LAMBDAS), spaced=True)
    """the interpolation weights lam"""
    pairs: int = setting(3, rule=at_least(1))
    """image pairs"""
    start: StartKind = "noise"
    """where each optimisation starts: uniform noise, the pixel blend, x1 or x2"""

    def __post_init__(self) -> None:
        check_settings(self, "interpolate")


@dataclass
class TargetedSettings:
    """Large targeted perturbations (Figure 5) from test images of other classes."""

    targets: list[int] | None = setting(None, rule=non_negative(), spaced=True)
    """target classes (default: all)"""
    per_target: int = setting(1, rule=at_least(1))
    """source images per target"""

    def __post_init__(self) -> None:
        check_settings(self, "targeted")


ToolSettings = FeatureSettings | InterpolationSettings | TargetedSettings
#: each visualisation's settings class, by tool name
TOOL_SETTINGS: dict[str, type[ToolSettings]] = {
    "features": FeatureSettings,
    "interpolate": InterpolationSettings,
    "targeted": TargetedSettings,
}


@dataclass
class VisualizeCommand:
    """``fastrobust visualize``: which images, which models' labels, where results go."""

    out: str | None = None
    """output folder (default: runs/visualize-TOOL-TIMESTAMP)"""
    seed: int = setting(0, rule=non_negative())
    """seed of every random choice"""
    images: str | None = None
    """.npz or .pt file of N x C x H x W images in [0,1] (or uint8), optional 'labels', used
    instead of test images"""
    dataset: str | None = None
    """test images from this dataset (default: the model's)"""
    data_dir: str | None = None
    """folder of the dataset files (default: the one the model was trained from)"""
    arch: str | None = None
    """architecture of checkpoints not written by fastrobust (robustness or torchvision-layout
    ResNets; default: read from the tensors), of the dataset named by `dataset`"""
    labels: list[str] | None = setting(None, spaced=True)
    """one row label per model"""
    weights: Literal["auto", "ema", "raw"] = "auto"
    """which weights of a run trained with --weight-average: auto (the average when the
    checkpoint has one), ema (the average), raw (the trained weights)"""
    device: str = "auto"
    """auto, cpu, cuda, cuda:1, ..."""
    progress: bool = True
    """progress bar over the optimisation steps on stderr (default: on)"""

    def __post_init__(self) -> None:
        check_settings(self, "visualize")
