"""``fastrobust bench``: training methods x seeds x threat models under one protocol file.

Parses the flags, calls :func:`fastrobust.study.bench.run_bench` and prints the collapse
criterion and where the report is; all the work lives in :mod:`fastrobust.study.bench`.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import Any

from fastrobust.settings import add_settings_flags, given_values
from fastrobust.study.bench import BenchCommand


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="benchmark training methods x seeds x threat models under one protocol",
        description="Train every method of the protocol for every seed and threat model, "
        "evaluate each model with AutoAttack and a PGD curve, and write bench.md, bench.html, "
        "bench.csv and a Pareto plot of AutoAttack accuracy against training cost. Finished "
        "work is cached in the benchmark folder. Without --config: the bundled digits "
        "protocol (every registered method x 3 seeds, L2 eps 1).",
    )
    flags = add_settings_flags(p, BenchCommand, section="bench")
    p.set_defaults(func=run, flag_of=flags)


def run(args: argparse.Namespace) -> int:
    from fastrobust.study.bench import BenchConfig, collapse_criterion, digits_protocol
    from fastrobust.study.bench_runner import run_bench

    command = BenchCommand(**given_values(args, BenchCommand))
    overrides = {"data_dir": command.data_dir}
    if command.config:
        config = BenchConfig.from_yaml(command.config, **overrides)
    else:
        config = BenchConfig.from_dict(
            {**digits_protocol(), **{k: v for k, v in overrides.items() if v}}
        )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(command.out).expanduser() if command.out else Path("runs") / f"bench-{stamp}"
    run_bench(
        config, out, resume=command.resume, progress=command.progress, device=command.device,
        tracking=command,
    )  # fmt: skip
    from fastrobust.distributed import world_info_from_env

    if world_info_from_env().is_main:
        print(f"collapse: {collapse_criterion(config)}")
        print(f"report: {out / 'bench.html'} (and bench.md, bench.csv, pareto.png)")
    return 0
