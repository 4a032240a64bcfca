"""The ``fastrobust`` command line: subcommands (one module each in this package), one-line
errors; the only part of the package that prints."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fastrobust.errors import FastRobustError

#: subcommand modules in this package; each has add_parser(subparsers) and run(args) -> int
COMMANDS = ["train", "eval", "visualize", "timing", "study"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit status 2) instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastrobust",
        description="Fast adversarial training, honest robustness evaluation and "
        "representation visualisation (Goodwin et al., HPEC 2020).",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    from fastrobust import __version__

    parser.add_argument("--version", action="version", version=f"fastrobust {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"fastrobust.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["train"]  # the offline default job
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from fastrobust.distributed import world_info_from_env

    world = world_info_from_env()  # under torchrun/srun only rank 0 logs below warnings
    logging.basicConfig(
        level=logging.WARNING if args.quiet or not world.is_main else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            return int(args.func(args) or 0)
    except FastRobustError as exc:
        where = f" (rank {world.rank})" if not world.is_main else ""
        print(f"fastrobust: error{where}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM where stops.stop_on_signals is on
        print("fastrobust: interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", 2)
    except OSError as exc:  # a write that no command anticipated: still one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"fastrobust: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
