"""``fastrobust visualize {features,interpolate,targeted} RUN [RUN ...]``: the paper's Figures 3-5.

Each model gets its own block of rows in one PNG grid, so standard, fast and 7-step models sit
side by side. The folder also holds ``images.npz`` (``images``: every optimised image,
N x C x H x W in ``[0,1]``; ``starts``: where each started; ``model_index``) and
``images.json`` (what each image is, with its numbers: activation, representation distance,
target probability before and after, perturbation norm). ``--seed`` fixes every random choice.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from fastrobust.cli.options import check_numbers
from fastrobust.errors import ConfigError

# ------------------------------------------------------------------------------------ parser


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
    common.add_argument("--out", help="output folder (default: runs/visualize-TOOL-TIMESTAMP)")
    common.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    common.add_argument("--norm", default="l2", help="threat model norm: l2 or linf")
    common.add_argument("--eps", type=float, help="radius (default: scaled to the image size)")
    common.add_argument("--steps", type=int, help="PGD steps (default: scaled to image size)")
    common.add_argument("--step-size", type=float, help="step length (default 2.5*eps/steps)")
    common.add_argument(
        "--images",
        help=".npz or .pt file of N x C x H x W images in [0,1] (or uint8), optional 'labels', "
        "used instead of test images",
    )
    common.add_argument("--dataset", help="test images from this dataset (default: the model's)")
    common.add_argument(
        "--data-dir",
        help="folder of the dataset files (default: the one the model was trained from)",
    )
    common.add_argument(
        "--arch",
        help="architecture of checkpoints not written by fastrobust (robustness or "
        "torchvision-layout ResNets; default: read from the tensors); dataset from --dataset",
    )
    common.add_argument("--labels", nargs="+", help="one row label per model")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    common.add_argument(
        "--import-model-factory",
        action="store_true",
        help="import and run the package.module:factory model a checkpoint names (only for "
        "checkpoints you trust; by default only registered models load)",
    )
    common.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bar over the optimisation steps on stderr (default: on)",
    )

    feat = tools.add_parser(
        "features",
        parents=[common],
        help="maximise single nodes of a representation layer (Figure 3)",
        description="Direct feature visualisation: from a seed, ascend one node's activation.",
    )
    feat.add_argument("--layer", help="module name (default: input of the final nn.Linear)")
    feat.add_argument(
        "--nodes", type=int, default=8, help="number of nodes drawn at random (default 8)"
    )
    feat.add_argument("--node", type=int, nargs="+", help="these node indices instead")
    feat.add_argument(
        "--seed-image",
        choices=("noise", "test"),
        default="noise",
        help="start from uniform noise (default) or test images",
    )
    feat.add_argument("--num-seeds", type=int, default=1, help="seed images (default 1)")

    interp = tools.add_parser(
        "interpolate",
        parents=[common],
        help="images between two images in representation space (Figure 4, Eq. 14)",
        description="Find x whose representation is closest to lam*f(x1) + (1-lam)*f(x2).",
    )
    interp.add_argument("--layer", help="module name (default: input of the final nn.Linear)")
    interp.add_argument(
        "--lambdas", type=float, nargs="+", default=[0.25, 0.5, 0.75], help="default 0.25 0.5 0.75"
    )
    interp.add_argument("--pairs", type=int, default=3, help="image pairs (default 3)")
    interp.add_argument(
        "--start",
        choices=("noise", "blend", "x1", "x2"),
        default="noise",
        help="where each optimisation starts (default: uniform noise)",
    )

    targ = tools.add_parser(
        "targeted",
        parents=[common],
        help="large targeted perturbations toward each class (Figure 5)",
        description="Targeted PGD with a large eps from test images of other classes.",
    )
    targ.add_argument("--targets", type=int, nargs="+", help="target classes (default: all)")
    targ.add_argument(
        "--per-target", type=int, default=1, help="source images per target (default 1)"
    )
    for sub in (feat, interp, targ):
        sub.set_defaults(func=run)


# --------------------------------------------------------------------------------------- run


def _out_dir(args: argparse.Namespace) -> Path:
    """The output folder, checked (not created) before any work."""
    from fastrobust.outputs import check_output_dir

    if args.out:
        return check_output_dir(args.out, what="--out")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return check_output_dir(Path("runs") / f"visualize-{args.tool}-{stamp}")


def run(args: argparse.Namespace) -> int:
    from fastrobust import figures
    from fastrobust.checkpoint import load_model
    from fastrobust.distributed import resolve_device
    from fastrobust.outputs import writing

    check_numbers(
        args,
        positive=("eps", "steps", "step_size"),
        at_least_one=[k for k in ("nodes", "num_seeds", "pairs", "per_target") if k in args],
        non_negative=[k for k in ("seed", "node", "targets") if k in args],
        finite=["lambdas"] if "lambdas" in args else [],
    )
    device = resolve_device(args.device)
    out = _out_dir(args)  # before any work: a bad --out costs nothing
    models = [
        load_model(
            path,
            device=device,
            arch=args.arch,
            dataset=args.dataset,
            import_factory=args.import_model_factory,
        )
        for path in args.models
    ]
    if args.labels and len(args.labels) != len(models):
        raise ConfigError(f"got {len(args.labels)} --labels for {len(models)} models")
    labels = args.labels or figures.panel_labels(models, args.models)
    panels = [figures.Panel(lab, m, str(p)) for lab, m, p in zip(labels, models, args.models)]
    x, y = figures.source_images(
        panels, images_file=args.images, dataset=args.dataset, data_dir=args.data_dir,
        seed=args.seed, device=device,
    )  # fmt: skip
    progress = args.progress and not getattr(args, "quiet", False)
    budget = figures.Budget(args.norm, args.eps, args.steps, args.step_size, progress=progress)
    if args.tool == "features":
        fig = figures.feature_figure(
            panels, x, nodes=args.nodes if args.node is None else args.node,
            num_seeds=args.num_seeds, seed_image=args.seed_image, layer=args.layer,
            budget=budget, seed=args.seed,
        )  # fmt: skip
    elif args.tool == "interpolate":
        fig = figures.interpolation_figure(
            panels, x, y, pairs=args.pairs, lambdas=args.lambdas, start=args.start,
            consecutive_pairs=bool(args.images), layer=args.layer, budget=budget, seed=args.seed,
        )  # fmt: skip
    else:
        fig = figures.targeted_figure(
            panels, x, y, targets=args.targets, per_target=args.per_target,
            in_order=bool(args.images), budget=budget, seed=args.seed,
        )  # fmt: skip
    with writing("the visualisation", out):
        written = fig.save(out, norm=args.norm)
    for label, line in zip(fig.labels, fig.summary):
        print(f"{label}: {line}")
    print(f"wrote {written['grid']}, {written['npz']} ({fig.num_images} images), {written['json']}")
    return 0
