"""The ``eda-tune`` command line. Each subcommand is a module of ``eda_tune.commands`` with
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int`` (heavy imports inside run)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from eda_tune.errors import EdaError

COMMANDS = (
    "eda_tune.commands.backends",
    "eda_tune.commands.tune",
    "eda_tune.commands.show",
    "eda_tune.commands.check",
    "eda_tune.commands.bench",
    "eda_tune.commands.compare",
    "eda_tune.commands.plot_study",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eda-tune", description="EDA kernels: tune, check, benchmark, dispatch.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod_name in COMMANDS:
        mod = importlib.import_module(mod_name)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except EdaError as err:
        print(f"eda-tune {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eda-tune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
