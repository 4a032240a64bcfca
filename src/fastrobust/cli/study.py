"""``fastrobust study``: the paper's whole experiment in one command, written up as a report.

Parses the flags, calls :func:`fastrobust.study.runner.run_study` and prints where the report
is and the claim lines; all the work lives in :mod:`fastrobust.study`.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from fastrobust.settings import add_settings_flags, given_values
from fastrobust.study.config import StudyCommand


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "study",
        help="the paper's whole experiment: train, time, evaluate, visualise, report",
        description="Train every method of the study config, time them (Table I, Figure 1), "
        "measure robustness over eps (Figure 2), make Figures 3-5 for every model side by "
        "side, score the perceptual alignment of targeted perturbations, and write "
        "report.md and a self-contained report.html. Finished work is cached in the study "
        "folder and skipped when run again with the same settings. Without --config: the "
        "bundled digits study (standard, fast, pgd-7; a few minutes on a CPU).",
    )
    flags = add_settings_flags(p, StudyCommand, section="study")
    p.set_defaults(func=run, flag_of=flags)


def run(args: argparse.Namespace) -> int:
    from fastrobust.study.config import StudyConfig
    from fastrobust.study.runner import run_study

    command = StudyCommand(**given_values(args, StudyCommand))
    if command.config:
        config = StudyConfig.from_yaml(command.config, data_dir=command.data_dir)
    else:
        config = StudyConfig.from_dict({"data_dir": command.data_dir} if command.data_dir else {})
    if command.out:
        out = Path(command.out).expanduser()
    else:
        out = Path("runs") / f"study-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    results = run_study(
        config,
        out,
        resume=command.resume,
        only=command.only,
        progress=command.progress,
        device=command.device,
        tracking=command,
    )
    from fastrobust.distributed import world_info_from_env
    from fastrobust.study.claims import check_claims

    if not world_info_from_env().is_main:
        return 0
    for verdict in check_claims(results):
        print(f"{verdict.claim}: {verdict.mark} -- {verdict.measured}")
    print(
        f"ran {len(results.ran)} piece(s) of work, the rest came from the cache; "
        f"report: {out / 'report.html'} (and report.md)"
    )
    return 0
