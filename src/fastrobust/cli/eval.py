"""``fastrobust eval``: accuracy-vs-eps curves of one or more models (Goodwin et al. 2020, Fig. 2)."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastrobust.cli.options import check_numbers
from fastrobust.errors import ConfigError, DataError, FastRobustError

if TYPE_CHECKING:
    import torch

    from fastrobust.distributed import WorldInfo
    from fastrobust.model_info import ModelInfo


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="adversarial accuracy vs eps of one or more models (table, JSON, CSV, plot)",
        description="Evaluate models under attack over an eps grid: a sample is robust at eps "
        "only if no restart of any attack, at this eps or a smaller one, fools it. Defaults "
        "are the paper's: 20-step PGD, 10 random restarts, step 2.5*eps/steps. Gradient-"
        "masking checks run with every evaluation.",
    )
    p.add_argument(
        "models", nargs="+", metavar="RUN_OR_CHECKPOINT", help="run folders or .pt files"
    )
    p.add_argument(
        "--norm",
        choices=["l2", "linf"],
        help="threat model (default: the norm the first model was trained with)",
    )
    p.add_argument(
        "--eps",
        help="comma-separated, strictly increasing eps values; fractions such as 8/255 allowed "
        "(default: 0, e/4, e/2, e, 2e for the first model's training eps e)",
    )
    p.add_argument(
        "--steps", type=int, help="attack steps (default: 20; per target for apgd-t, fab-t)"
    )
    p.add_argument(
        "--restarts",
        type=int,
        help="random restarts of pgd, apgd-ce, apgd-dlr (default: 10)",
    )
    p.add_argument(
        "--targets",
        type=int,
        default=9,
        help="target classes of apgd-t and fab-t, clipped to classes-1 (default: 9)",
    )
    p.add_argument(
        "--queries", type=int, default=5000, help="queries of the square attack (default: 5000)"
    )
    p.add_argument(
        "--eot",
        type=int,
        default=1,
        help="gradients averaged per APGD step, for randomised models (default: 1)",
    )
    p.add_argument(
        "--step-size-factor",
        type=float,
        default=2.5,
        help="PGD step size as a multiple of eps/steps (default: 2.5)",
    )
    p.add_argument(
        "--attack",
        default="pgd",
        help="attack, or a comma-separated cascade run in order on the still-robust points: "
        "pgd, apgd-ce, apgd-dlr, apgd-t, fab-t, fab, square (default: pgd; e.g. "
        "pgd,apgd-ce,apgd-dlr); or autoattack (AutoAttack's standard version: apgd-ce, apgd-t, "
        "fab-t, square with its budgets) or autoattack-rand (apgd-ce, apgd-dlr with EOT)",
    )
    p.add_argument(
        "--random-start",
        help="random start: ball (uniform in the ball, the paper's; default), sphere, radius "
        "(torchattacks'), none",
    )
    p.add_argument(
        "--limit",
        type=int,
        help="evaluate on a class-stratified sample of N test points, drawn from --seed",
    )
    p.add_argument("--data", help="dataset (default: the one the first model was trained on)")
    p.add_argument(
        "--data-dir",
        help="folder holding the dataset files (default: the folder the first model was "
        "trained from, when evaluating on its dataset)",
    )
    p.add_argument(
        "--arch",
        help="architecture of checkpoints not written by fastrobust (MadryLab robustness or "
        "torchvision-layout ResNets): resnet18, resnet50, ... optionally _imagenet/_cifar "
        "(default: read from the checkpoint's tensors); their dataset comes from --data",
    )
    p.add_argument(
        "--out", help="output folder (default: a new eval-<timestamp> next to the first run)"
    )
    p.add_argument(
        "--import-model-factory",
        action="store_true",
        help="import and run the package.module:factory model a checkpoint names (only for "
        "checkpoints you trust; by default only registered models load)",
    )
    p.add_argument("--batch-size", type=int, default=500, help="samples per chunk (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random starts (default: 0)")
    p.add_argument("--device", default="auto", help="auto (GPU if any), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--checks",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gradient-masking checks (default: on)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="progress bar on stderr (default: on)",
    )
    p.set_defaults(func=run)


def _label(path: Path) -> str:
    """A short name for a model: its run folder, plus the file stem unless it is best.pt."""
    if path.is_dir():
        return path.resolve().name
    parent = path.resolve().parent
    if (parent / "config.yaml").is_file():
        return parent.name if path.stem == "best" else f"{parent.name}:{path.stem}"
    return path.stem


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def default_out_dir(first: Path) -> Path:
    """``eval-<timestamp>`` next to the first run folder, else under ``runs/``."""
    first = first.resolve()
    run_dir = first if first.is_dir() else first.parent
    if not (run_dir / "config.yaml").is_file() and not first.is_dir():
        root = Path("runs")
    else:
        root = run_dir.parent
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out, k = root / f"eval-{stamp}", 1
    while out.exists():
        k += 1
        out = root / f"eval-{stamp}-{k}"
    return out


def _default_eps(info: ModelInfo) -> list[float]:
    eps = info.eps
    if not info.adversarially_trained or not eps:
        raise ConfigError("give --eps (the first model has no training eps to build a grid from)")
    return [0.0, eps / 4, eps / 2, eps, 2 * eps]


def _size_option(data_name: str, info: ModelInfo) -> dict:
    """Disk datasets are resized to the size the (first) model was trained on."""
    from fastrobust.data.base import dataset_options

    if "image_size" in dataset_options(data_name) and info.spec is not None:
        return {"image_size": info.spec.image_size}
    return {}


def run(args: argparse.Namespace) -> int:
    """Evaluate; under ``torchrun`` every rank takes a shard of the points, rank 0 reports."""
    from fastrobust.distributed import (
        barrier,
        init_distributed,
        on_every_rank,
        resolve_device,
        shutdown_distributed,
        together,
        world_info_from_env,
    )
    from fastrobust.evaluation.inputs import parse_eps_list, validate_attacks

    def check_arguments() -> tuple[list[str], list[float] | None]:
        attacks = validate_attacks(args.attack)
        eps_list = parse_eps_list(args.eps) if args.eps is not None else None
        check_numbers(
            args,
            positive=("step_size_factor",),
            at_least_one=("limit", "steps", "restarts", "batch_size", "targets", "queries", "eot"),
            non_negative=("seed",),
        )
        return attacks, eps_list

    world = world_info_from_env()
    if not world.distributed:
        attacks, eps_list = check_arguments()
    device = resolve_device(args.device, world.local_rank)
    init_distributed(world, device)
    try:
        if world.distributed:  # checked on every rank, reported once
            attacks, eps_list = together(check_arguments, world)
        return _evaluate(args, world, device, attacks, eps_list)
    except FastRobustError as exc:
        if not (world.distributed and on_every_rank(exc)):
            raise
        # every rank stops here together: rank 0 says why, once, and the others wait until it
        # has, so a launcher that ends the job when one rank exits cannot cut the message short
        if world.is_main:
            print(f"fastrobust: error: {exc}", file=sys.stderr, flush=True)
        barrier()
        return 2
    finally:
        shutdown_distributed()


def _evaluate(
    args: argparse.Namespace,
    world: WorldInfo,
    device: torch.device,
    attacks: list[str],
    eps_list: list[float] | None,
) -> int:
    from fastrobust.checkpoint import load_model
    from fastrobust.data import load_dataset
    from fastrobust.distributed import together
    from fastrobust.evaluation.report import (
        describe_attack,
        format_fooled_by,
        format_table,
        write_report,
    )
    from fastrobust.evaluation.sharding import sharded_robustness_curve
    from fastrobust.model_info import check_model_fits, data_dir_for, model_info
    from fastrobust.outputs import check_output_dir, writing

    paths = [Path(p).expanduser() for p in args.models]

    def output_folder() -> Path | None:
        """Where the results go (rank 0 writes them), checked before any work."""
        if not world.is_main:
            return None
        out = Path(args.out).expanduser() if args.out else default_out_dir(paths[0])
        check_output_dir(out, what="--out" if args.out else "output folder")
        return out

    out = together(output_folder, world)  # a bad --out costs nothing, on any rank

    def setup() -> tuple[list[Any], list[str], str, list[float], Any]:
        models = [
            load_model(
                p,
                device=device,
                arch=args.arch,
                dataset=args.data,
                import_factory=args.import_model_factory,
            )
            for p in paths
        ]
        labels = _unique([_label(p) for p in paths])
        first_info = model_info(models[0])
        norm = args.norm or first_info.norm
        if norm is None:
            raise ConfigError("give --norm (the first checkpoint does not record one)")
        eps = eps_list
        if eps is None:
            if first_info.norm != norm:
                raise ConfigError("give --eps (the first model was trained under another norm)")
            eps = _default_eps(first_info)
        data_name = args.data or first_info.dataset
        if data_name is None:
            raise ConfigError("give --data (the first checkpoint does not record its dataset)")
        data_dir = data_dir_for(first_info, data_name, args.data_dir)
        data = load_dataset(data_name, data_dir, **_size_option(data_name, first_info))
        for label, model in zip(labels, models):
            try:
                check_model_fits(model, data.test_x, data.test_y, classes=data.classes)
            except DataError as exc:
                raise DataError(f"{label} does not fit {data.name}: {exc}") from None
        return models, labels, norm, eps, data

    models, labels, norm, eps, data = together(setup, world)
    curves = {}
    quiet = getattr(args, "quiet", False)
    eval_log = logging.getLogger("fastrobust.evaluation.curve")
    level = eval_log.level
    eval_log.setLevel(logging.ERROR)  # the failed checks are printed in the report below
    try:
        for label, model in zip(labels, models):
            curves[label] = sharded_robustness_curve(
                model,
                data,
                norm,
                eps,
                steps=args.steps,
                restarts=args.restarts,
                step_size_factor=args.step_size_factor,
                attacks=attacks,
                targets=args.targets,
                queries=args.queries,
                eot=args.eot,
                random_start=args.random_start,
                limit=args.limit,
                batch_size=args.batch_size,
                seed=args.seed,
                device=device,
                checks=args.checks,
                progress=args.progress and not quiet,
                label=label,
                world=world,
            )
    finally:
        eval_log.setLevel(level)
    if not world.is_main:
        return 0
    assert out is not None
    extra = {
        "arguments": {k: v for k, v in vars(args).items() if k != "func"},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "paths": {label: str(p) for label, p in zip(labels, paths)},
    }
    if world.distributed:
        extra["world_size"] = world.world_size
    with writing("the evaluation results", out):
        written = write_report(out, curves, extra=extra)
    first = curves[labels[0]]
    print(f"adversarial accuracy on {data.name}, {first.subset}")
    if first.shards is not None:
        shares = ", ".join(str(s["stop"] - s["start"]) for s in first.shards)
        print(f"processes: {world.world_size} (points per rank: {shares}; counts are exact sums)")
    print(f"attack: {describe_attack(first)}")
    print(format_table(curves))
    if len(first.attacks) > 1:
        print(format_fooled_by(curves))
    for label, curve in curves.items():
        for note in curve.notes:
            print(f"note: {label}: {note}")
        for message in curve.warnings:
            print(f"warning: {label}: {message}")
    if args.checks:
        summary = ", ".join(
            f"{label} {sum(c.passed for c in curve.checks)}/{len(curve.checks)} passed"
            for label, curve in curves.items()
        )
        print(f"gradient-masking checks: {summary}")
    else:
        print("gradient-masking checks: skipped (--no-checks)")
    print(f"wrote {written['json']}, {written['csv'].name}, {written['png'].name}")
    return 0
