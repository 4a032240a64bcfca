"""``fastrobust certify``: certified L2 accuracy vs radius by randomized smoothing (Cohen,
Rosenfeld & Kolter, ICML 2019).

The flags come from :class:`~fastrobust.smoothing.settings.CertifySettings`; the work is
:func:`fastrobust.smoothing.workflow.certify`; this module parses, calls and prints.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

from fastrobust.errors import FastRobustError
from fastrobust.settings import add_settings_flags, given_values
from fastrobust.smoothing.settings import SECTION, CertifySettings

if TYPE_CHECKING:
    from fastrobust.smoothing.workflow import CertificationResult


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "certify",
        help="certified L2 accuracy vs radius of smoothed models (JSON, CSV, plot)",
        description="Smooth each model with Gaussian noise and run Cohen et al.'s CERTIFY on "
        "every test point: n0 draws pick the top class, n draws bound its probability "
        "(Clopper-Pearson at alpha); the point is certified at radius sigma*Phi^-1(bound) "
        "or abstains. The smoothed-classifier attack (Salman et al. 2019) checks the curve.",
    )
    p.add_argument(
        "models", nargs="+", metavar="RUN_OR_CHECKPOINT", help="run folders or .pt files"
    )
    flags = add_settings_flags(p, CertifySettings, section=SECTION)
    p.set_defaults(func=run, flag_of=flags)


def settings_from_args(args: argparse.Namespace) -> CertifySettings:
    """The settings the flags give (``-q``: no progress bar)."""
    settings = CertifySettings(**given_values(args, CertifySettings))
    if getattr(args, "quiet", False):
        settings = dataclasses.replace(settings, progress=False)
    return settings


def run(args: argparse.Namespace) -> int:
    """Certify; under ``torchrun`` every rank takes a block of the points, rank 0 reports."""
    from fastrobust.cli.eval import _stop_together
    from fastrobust.distributed import (
        init_distributed,
        resolve_device,
        shutdown_distributed,
        together,
        world_info_from_env,
    )
    from fastrobust.smoothing.workflow import certify

    world = world_info_from_env()
    if not world.distributed:  # a mistake costs nothing: checked before the device is touched
        settings = settings_from_args(args)
    device = resolve_device(args.device or CertifySettings.device, world.local_rank)
    init_distributed(world, device)
    try:
        if world.distributed:
            settings = together(lambda: settings_from_args(args), world)
        result = certify(args.models, settings, device=device, world=world)
        if world.is_main:
            _print(result)
        return 0
    except FastRobustError as exc:
        return _stop_together(exc, world, args)
    finally:
        shutdown_distributed()


def _print(result: CertificationResult) -> None:
    from fastrobust.smoothing.report import format_table

    s, first = result.settings, next(iter(result.curves.values()))
    print(f"certified L2 accuracy on {result.dataset}, {first.subset}")
    print(f"smoothing: sigma {s.sigma:g}, n0 {s.n0}, n {s.n}, alpha {s.alpha:g}, seed {s.seed}")
    print(format_table(result.curves))
    for label, curve in result.curves.items():
        rate = f"{curve.images_per_s:.3g} images/s"
        print(
            f"{label}: {curve.certificates.samples} noisy samples in {curve.certificates.time_s:.1f} s ({rate})"
        )
        if curve.check is not None:
            verdict = "passed" if curve.check.passed else "FAILED"
            print(
                f"smoothed-attack check ({label}, {curve.check.n} points): {verdict}: {curve.check.message}"
            )
    if not s.checks:
        print("smoothed-attack check: skipped (--no-checks)")
    w = result.written
    print(f"wrote {w['json']}, {w['csv'].name}, {w['png'].name}")
