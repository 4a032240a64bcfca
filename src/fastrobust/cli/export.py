"""``fastrobust export``: a run or checkpoint as a portable folder (safetensors, config.json,
model card), optionally with a RobustBench entry. The flags come from
:class:`~fastrobust.export.settings.ExportSettings`; the work is
:func:`fastrobust.export.export_model`; this module parses, calls and prints."""

from __future__ import annotations

import argparse
from typing import Any

from fastrobust.export.settings import SECTION, ExportSettings
from fastrobust.settings import add_settings_flags, given_values


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="a run or checkpoint as a portable folder: model.safetensors, config.json, "
        "README.md model card (--robustbench: and RobustBench's model_info JSON)",
        description="Export a run folder, a fastrobust .pt, or a MadryLab robustness / "
        "torchvision-layout ResNet checkpoint as model.safetensors (tensors only) + "
        "config.json + a README.md model card, loadable with fastrobust.load_model(folder). "
        "With --robustbench NAME: also an AutoAttack standard evaluation on the whole test "
        "set (run, or reused with --evaluation) and RobustBench's model_info JSON.",
    )
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="run folder or .pt file")
    flags = add_settings_flags(p, ExportSettings, section=SECTION)
    p.set_defaults(func=run, flag_of=flags)


def run(args: argparse.Namespace) -> int:
    from fastrobust.export import export_model
    from fastrobust.stops import stop_on_signals

    settings = ExportSettings(**given_values(args, ExportSettings))
    if getattr(args, "quiet", False):
        settings.progress = False
    with stop_on_signals():  # SIGTERM as Ctrl-C: the unfinished export is removed
        result = export_model(args.run, settings)
    for row in result.config.get("evaluations", []):
        print(
            f"{row['what']}: clean {row['clean_acc']:.4f}, robust {row['robust_acc']:.4f} "
            f"on {row['images']} test images"
        )
    names = ", ".join(str(p.relative_to(result.out)) for p in result.files)
    print(f"exported {args.run} to {result.out}: {names}")
    if result.robustbench is not None:
        print(f"RobustBench entry: {result.robustbench}")
    return 0
