"""``fastrobust timing``: where the training time goes (Goodwin et al. 2020, Table I, Figure 1).

Without ``--runs`` it measures attack and training-step costs over batch sizes on this device
and estimates lower bounds on total training time over batch sizes and GPU counts. With
``--runs`` it prints Table I from run folders (add ``--measure`` to also measure, with the
first run's settings as defaults, and overlay the runs' measured times as stars). The work is
:func:`fastrobust.timing.workflow.run_timing`; the flags come from
:class:`~fastrobust.timing.settings.TimingCommand`.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastrobust.settings import add_settings_flags, given_values
from fastrobust.timing.settings import (
    MEASUREMENT_FIELDS,
    TimingCommand,
    TimingSettings,
    help_texts,
)

_ESTIMATE_FIELDS = [
    name for name in TimingSettings.__dataclass_fields__ if name not in MEASUREMENT_FIELDS
]
_OWN_FIELDS = [*MEASUREMENT_FIELDS, *_ESTIMATE_FIELDS]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "timing",
        help="attack cost vs batch size, training-time lower bounds, Table I from run folders",
        description="Measure one forward pass, one training step and one K-step PGD attack "
        "over batch sizes on this device (Figure 1 left), estimate lower bounds on total "
        "training time over batch sizes and GPU counts (Figure 1 middle/right), and print "
        "Table I (hours to last/best epoch) from run folders. Writes CSV files and timing.png.",
    )
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN", help="run folders for Table I")
    flags = add_settings_flags(p, TimingCommand, section="timing", skip=_OWN_FIELDS)
    helps = help_texts()
    g = p.add_argument_group("measurement (defaults: the first run's settings, else these)")
    flags |= add_settings_flags(
        g, TimingSettings, section="timing", skip=_ESTIMATE_FIELDS, help_overrides=helps
    )
    e = p.add_argument_group("estimate (defaults: the first run's settings, else these)")
    flags |= add_settings_flags(
        e, TimingSettings, section="timing", skip=MEASUREMENT_FIELDS, help_overrides=helps
    )
    p.add_argument(
        "--import-model-factory",
        action="store_true",
        help="import and run a package.module:factory model named by a run folder's config "
        "(only for run folders you trust)",
    )
    p.set_defaults(func=run, flag_of=flags)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in text]
    return "\n".join(lines)


def _print_table_one(report: Any) -> None:
    print(f"Table I: training time (relative to {report.runs[report.baseline].name})")
    headers = ["run", "method", "GPUs", "batch", "epochs", "best ep", "best acc", "best by"]
    headers += ["h to last", "h to best", "rel last", "rel best", "test adv", "best test adv"]
    keys = ["run", "method", "gpus", "batch_size", "epochs", "best_epoch", "best_acc", "best_by"]
    keys += ["hours_to_last", "hours_to_best", "rel_last", "rel_best"]
    keys += ["test_adv_acc", "best_test_adv_acc"]
    print(_table(headers, [[row[k] for k in keys] for row in report.table]))


def _pivot(estimates: list[Any], key: str, methods: list[str]) -> list[list[Any]]:
    by = {(getattr(e, key), e.method): e.total_s / 3600 for e in estimates}
    xs = sorted({getattr(e, key) for e in estimates})
    return [[x, *(by.get((x, m)) for m in methods)] for x in xs]


def _print_figure_one(fig: Any, repeats: int, out: Any) -> None:
    from fastrobust.timing.measure import FORWARD

    curves, labels = fig.curves, fig.labels
    print(f"\nseconds per call on {curves.device} (median of {repeats}):")
    ops, sizes = curves.ops(), curves.batch_sizes(FORWARD)
    print(_table(["batch", *ops], [[b, *(curves.seconds(op, b) for op in ops)] for b in sizes]))
    print(f"\nlower bound on total training hours, {fig.run.procs} GPU(s) [{fig.title}]:")
    print(_table(["global batch", *labels], _pivot(fig.by_batch, "global_batch", labels)))
    print(f"\nlower bound on total training hours, global batch {fig.run.global_batch}:")
    print(_table(["GPUs", *labels], _pivot(fig.by_gpus, "gpus", labels)))
    if fig.skipped_gpus:
        print(
            f"(GPU counts {fig.skipped_gpus} do not divide the global batch "
            f"{fig.run.global_batch}: left out)"
        )
    print(
        f"\nwritten: {out}/measured.csv, estimate_batch.csv, estimate_gpus.csv, steps.json, "
        "timing.png"
    )


def run(args: argparse.Namespace) -> int:
    from fastrobust.timing.workflow import run_timing

    command = TimingCommand(**given_values(args, TimingCommand))
    report = run_timing(command, args.runs, import_factory=args.import_model_factory)
    if report.table:
        _print_table_one(report)
    if report.figure is None:
        print(f"written: {report.out / 'table1.csv'}")
    else:
        _print_figure_one(report.figure, command.repeats, report.out)
    return 0
