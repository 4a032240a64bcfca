"""``fastrobust visualize {features,interpolate,targeted} RUN [RUN ...]``: the paper's Figures 3-5.

Each model gets its own block of rows in one PNG grid, so standard, fast and 7-step models sit
side by side. The folder also holds ``images.npz`` (``images``: every optimised image,
N x C x H x W in ``[0,1]``; ``starts``: where each started; ``model_index``) and
``images.json`` (what each image is, with its numbers: activation, representation distance,
target probability before and after, perturbation norm). ``--seed`` fixes every random choice.
The work is :func:`fastrobust.figures.visualize`; the flags come from the tool's settings
(:mod:`fastrobust.figure_settings`), :class:`~fastrobust.represent.Budget` and
:class:`~fastrobust.figure_settings.VisualizeCommand`.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastrobust.figure_settings import TOOL_SETTINGS, VisualizeCommand
from fastrobust.represent import Budget
from fastrobust.settings import add_settings_flags, given_values

#: each tool's help line and description
_TOOLS = {
    "features": (
        "maximise single nodes of a representation layer (Figure 3)",
        "Direct feature visualisation: from a seed, ascend one node's activation.",
    ),
    "interpolate": (
        "images between two images in representation space (Figure 4, Eq. 14)",
        "Find x whose representation is closest to lam*f(x1) + (1-lam)*f(x2).",
    ),
    "targeted": (
        "large targeted perturbations toward each class (Figure 5)",
        "Targeted PGD with a large eps from test images of other classes.",
    ),
}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="feature visualisation, representation interpolation, large targeted perturbations",
        description="Look inside trained models (Goodwin et al. 2020, Figures 3-5; Engstrom et "
        "al. 2019): every tool is PGD over the input with a large eps and a custom loss.",
    )
    tools = p.add_subparsers(dest="tool", metavar="TOOL", required=True, parser_class=type(p))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "models", nargs="+", metavar="RUN_OR_CHECKPOINT", help="run folders or .pt checkpoints"
    )
    flags = add_settings_flags(common, VisualizeCommand, section="visualize")
    flags |= add_settings_flags(common, Budget, section="budget", skip=["progress"])
    common.add_argument(
        "--import-model-factory",
        action="store_true",
        help="import and run the package.module:factory model a checkpoint names (only for "
        "checkpoints you trust; by default only registered models load)",
    )
    for tool, (help_line, description) in _TOOLS.items():
        sub = tools.add_parser(tool, parents=[common], help=help_line, description=description)
        own = add_settings_flags(sub, TOOL_SETTINGS[tool], section=tool)
        sub.set_defaults(func=run, flag_of={**flags, **own})


def run(args: argparse.Namespace) -> int:
    from fastrobust.figures import visualize

    command = VisualizeCommand(**given_values(args, VisualizeCommand))
    progress = command.progress and not getattr(args, "quiet", False)
    budget = Budget(**given_values(args, Budget, skip=["progress"]), progress=progress)
    cls = TOOL_SETTINGS[args.tool]
    settings = cls(**given_values(args, cls))
    fig, written = visualize(
        args.tool, args.models, settings, command, budget, import_factory=args.import_model_factory
    )
    for label, line in zip(fig.labels, fig.summary):
        print(f"{label}: {line}")
    print(f"wrote {written['grid']}, {written['npz']} ({fig.num_images} images), {written['json']}")
    return 0
