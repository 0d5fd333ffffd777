"""The `fiberwatch` command line.

Each subcommand lives in `fiberwatch/commands/<name>.py` and exposes
``register(subparsers)``; heavy imports happen inside the handlers so that
``fiberwatch edge run`` on a gateway never imports torch or FastAPI.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from edge_agent.logs import LOG_FORMAT
from fiberwatch import __version__

#: Subcommands whose own parser takes the rest of the command line: (words) -> module.main
PASSTHROUGH = {("cloud", "ingest"): "cloud.ingest.service",
               ("cloud", "alerting"): "cloud.alerting.service",
               ("cloud", "labels"): "cloud.labels"}

#: Subcommand modules, in the order `--help` lists them.
COMMANDS = ("demo", "sim", "edge", "bridge", "model", "score", "fl", "cloud", "query", "config",
            "deploy", "bench")


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiberwatch",
        description="Edge-plus-cloud anomaly detection for fiber-optic sensing (DAS/DTS).",
    )
    parser.add_argument("--version", action="version", version=f"fiberwatch {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"fiberwatch.commands.{name}")
        module.register(sub)
    return parser


def configure_logging(verbosity: int) -> None:
    """Structured (key=value) and quiet by default: warnings only."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    logging.basicConfig(
        level=level,
        format=LOG_FORMAT,
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for words, module in PASSTHROUGH.items():
        if tuple(argv[: len(words)]) == words:
            return int(importlib.import_module(module).main(argv[len(words):]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        result = args.func(args)
    except UsageError as exc:
        print(f"fiberwatch {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
