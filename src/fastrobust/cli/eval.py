"""``fastrobust eval``: accuracy-vs-eps curves of one or more models (Goodwin et al. 2020, Fig. 2).

The flags come from :class:`~fastrobust.evaluation.settings.EvaluationSettings`; the work is
:func:`fastrobust.evaluation.workflow.evaluate`; this module parses, calls and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING, Any

from fastrobust.errors import FastRobustError
from fastrobust.evaluation.settings import SECTION, EvaluationSettings
from fastrobust.settings import add_settings_flags, given_values, render_error

if TYPE_CHECKING:
    from fastrobust.distributed import WorldInfo
    from fastrobust.evaluation.workflow import EvaluationResult


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
    flags = add_settings_flags(
        p, EvaluationSettings, section=SECTION, skip=("bn_mode", "check_size")
    )
    p.set_defaults(func=run, flag_of=flags)


def settings_from_args(args: argparse.Namespace) -> EvaluationSettings:
    """The settings the flags give (the others at their defaults; ``-q``: no progress bar)."""
    settings = EvaluationSettings(**given_values(args, EvaluationSettings))
    if getattr(args, "quiet", False):
        settings = dataclasses.replace(settings, progress=False)
    return settings


def run(args: argparse.Namespace) -> int:
    """Evaluate; under ``torchrun`` every rank takes a shard of the points, rank 0 reports."""
    from fastrobust.distributed import (
        init_distributed,
        resolve_device,
        shutdown_distributed,
        together,
        world_info_from_env,
    )
    from fastrobust.evaluation.workflow import evaluate

    world = world_info_from_env()
    if not world.distributed:  # a mistake costs nothing: checked before the device is touched
        settings = settings_from_args(args)
    device = resolve_device(args.device or EvaluationSettings.device, world.local_rank)
    init_distributed(world, device)
    try:
        if world.distributed:  # checked on every rank, reported once
            settings = together(lambda: settings_from_args(args), world)
        result = evaluate(args.models, settings, device=device, world=world)
        if world.is_main:
            _print(result)
        return 0
    except FastRobustError as exc:
        return _stop_together(exc, world, args)
    finally:
        shutdown_distributed()


def _stop_together(exc: FastRobustError, world: WorldInfo, args: argparse.Namespace) -> int:
    """Every rank stops here together: rank 0 says why, once, and the others wait until it
    has, so a launcher that ends the job when one rank exits cannot cut the message short."""
    from fastrobust.distributed import barrier, on_every_rank

    if not (world.distributed and on_every_rank(exc)):
        raise exc
    if world.is_main:
        message = render_error(exc, getattr(args, "flag_of", {}))
        print(f"fastrobust: error: {message}", file=sys.stderr, flush=True)
    barrier()
    return 2


def _print(result: EvaluationResult) -> None:
    """The table, the attack, the notes and warnings, the checks and the files written."""
    from fastrobust.evaluation.report import describe_attack, format_fooled_by, format_table

    curves = result.curves
    first = next(iter(curves.values()))
    print(f"adversarial accuracy on {result.dataset}, {first.subset}")
    if first.shards is not None:
        shares = ", ".join(str(s["stop"] - s["start"]) for s in first.shards)
        print(f"processes: {result.world_size} (points per rank: {shares}; counts are exact sums)")
    print(f"attack: {describe_attack(first)}")
    print(format_table(curves))
    if len(first.attacks) > 1:
        print(format_fooled_by(curves))
    for label, curve in curves.items():
        for note in curve.notes:
            print(f"note: {label}: {note}")
        for message in curve.warnings:
            print(f"warning: {label}: {message}")
    _print_checks(result)
    written = result.written
    print(f"wrote {written['json']}, {written['csv'].name}, {written['png'].name}")


def _print_checks(result: EvaluationResult) -> None:
    if not result.settings.checks:
        print("gradient-masking checks: skipped (--no-checks)")
        return
    summary = ", ".join(
        f"{label} {sum(c.passed for c in curve.checks)}/{len(curve.checks)} passed"
        for label, curve in result.curves.items()
    )
    print(f"gradient-masking checks: {summary}")
