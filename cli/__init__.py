"""The `apiusage` command: one parser, each tool's subcommands registered by the tool.

A tool's `command` module registers its arguments without importing the tool, so
`apiusage --help` and every command start without the others' dependencies; a tool
whose imports fail for a missing extra is left out of the parser (`apiusage catalog`
needs only PyYAML; the others import their extra when they run, and name it if missing).
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

# The modules whose `register(commands)` adds subcommands, in `apiusage --help` order.
COMMANDS = (
    "apiusage.processor.command",  # serve, consumers
    "apiusage.rules.command",  # rules, runbooks check
    "apiusage.demo.launch.command",  # demo
    "apiusage.report.command",  # report
    "apiusage.experiments.command",  # experiments report, release-notes
    "apiusage.instrumentation._catalog_cli",  # catalog (PyYAML only)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="apiusage", description="API usage analytics from OpenTelemetry spans."
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if not exc.name or exc.name.partition(".")[0] == "apiusage":
                raise  # one of our own modules is broken or missing: a bug, not a missing extra
            continue  # a third-party package of an extra that is not installed
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
