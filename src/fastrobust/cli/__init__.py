"""The ``fastrobust`` command line: subcommands (one module each in this package), one-line
errors; the only part of the package that prints."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from fastrobust.errors import FastRobustError
from fastrobust.settings import render_error

#: subcommand modules in this package; each has add_parser(subparsers) and run(args) -> int
COMMANDS = ["train", "eval", "certify", "visualize", "timing", "study", "bench", "export"]
#: library keywords whose flag is not ``--`` + the keyword (errors name the keyword)
FLAGS_OF_KEYWORDS = {"import_factory": "--import-model-factory"}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (exit status 2) instead of usage + error, and no
    abbreviated flags (``--epoch 3`` is an error, not a silent ``--epochs 3``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_verbosity(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``-q`` / ``-v`` on ``parser``; below the top level they default to "not given", so
    ``fastrobust -q train`` and ``fastrobust train -q`` mean the same."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings and results", **default
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug details (e.g. full key lists)",
        **default,
    )


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser`` (subcommands and their tools), depth first."""
    found = []
    for action in parser._actions:  # noqa: SLF001  argparse offers no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub in dict.fromkeys(action.choices.values()):
                found += [sub, *_subcommand_parsers(sub)]
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastrobust",
        description="Fast adversarial training, honest robustness evaluation and "
        "representation visualisation (Goodwin et al., HPEC 2020).",
    )
    _add_verbosity(parser, top=True)
    from fastrobust import __version__

    parser.add_argument("--version", action="version", version=f"fastrobust {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"fastrobust.cli.{name}").add_parser(subparsers)
    for sub in _subcommand_parsers(parser):
        _add_verbosity(sub, top=False)
    return parser


def _configure_logging(*, quiet: bool, verbose: bool, is_main: bool) -> None:
    """INFO lines on stderr (WARNING with -q and on ranks other than 0); -v: fastrobust's own
    debug lines (not every library's), set on each call (NOTSET: as the root logger), as tests
    call main() repeatedly in one process."""
    logging.basicConfig(
        level=logging.WARNING if quiet or not is_main else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    level = logging.DEBUG if verbose and is_main else logging.NOTSET
    logging.getLogger("fastrobust").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # nothing asked: say what can be asked (the default job is `fastrobust train`)
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.quiet and args.verbose:
        parser.error("-q and -v contradict each other; give one")
    from fastrobust.distributed import world_info_from_env

    world = world_info_from_env()  # under torchrun/srun only rank 0 logs below warnings
    _configure_logging(quiet=args.quiet, verbose=args.verbose, is_main=world.is_main)
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        with logging_redirect_tqdm():
            return int(args.func(args) or 0)
    except FastRobustError as exc:
        where = f" (rank {world.rank})" if not world.is_main else ""
        message = render_error(exc, {**FLAGS_OF_KEYWORDS, **getattr(args, "flag_of", {})})
        print(f"fastrobust: error{where}: {message}", file=sys.stderr)
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
