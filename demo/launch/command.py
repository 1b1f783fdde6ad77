"""The `apiusage demo` subcommand: options, registered on the main parser by cli.py."""

from __future__ import annotations

import argparse

from .ports import PORTS

__all__ = ["register"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (got {text})")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"must be from 0 to 604800 seconds (got {text})")
    return value


def _days(text: str) -> int:
    if not text.isdigit() or int(text) > 400:
        raise argparse.ArgumentTypeError(f"must be a whole number of days from 0 to 400 (got {text!r})")
    return int(text)


def _demo(args: argparse.Namespace) -> int:
    try:
        from .demo import run
    except ImportError as exc:
        import sys

        print(
            f"apiusage: the demo's dependencies are not installed ({exc.name}); "
            "install them with: pip install 'apiusage[demo]'",
            file=sys.stderr,
        )
        return 2
    return run(args)


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the whole loop on this machine: processor, demo API, traffic, Prometheus",
        description="Start the processor, a demo FastAPI service under zero-code instrumentation, "
        "a traffic generator and, when they are installed, Prometheus and Alertmanager "
        "with the bundled rules; backfill weeks of history; print where everything "
        "runs and a live summary until Ctrl-C. Everything listens on 127.0.0.1.",
    )
    ports = demo.add_argument_group("ports (on 127.0.0.1; 0 picks a free one)")
    for spec in PORTS:
        ports.add_argument(
            spec.flag,
            dest=spec.name,
            type=int,
            default=spec.default,
            metavar="PORT",
            help=f"{spec.what} (default {spec.default})",
        )
    demo.add_argument(
        "--dir",
        metavar="DIR",
        help="keep state, Prometheus data and logs in DIR, reused by the next run "
        "(default: a temporary folder removed at exit)",
    )
    demo.add_argument(
        "--history-days",
        type=_days,
        default=42,
        metavar="DAYS",
        help="days of simulated history to backfill on start (default 42; 0: none; "
        "skipped when --dir already holds a state store)",
    )
    demo.add_argument(
        "--rate",
        type=_positive,
        default=20.0,
        metavar="RPS",
        help="average requests per second of live traffic (default 20)",
    )
    demo.add_argument(
        "--burst-every",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="mean seconds between export bursts over the API's capacity, which answer "
        "503 and burn the error budget (default 30)",
    )
    demo.add_argument("--seed", type=int, default=7, help="random seed of consumers and traffic (default 7)")
    demo.add_argument(
        "--summary-every",
        type=_positive,
        default=5.0,
        metavar="SECONDS",
        help="seconds between live summary lines (default 5)",
    )
    demo.add_argument(
        "--duration",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="stop by itself after this long (default: run until Ctrl-C)",
    )
    demo.add_argument(
        "--release-after",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="roll out release 1.5.0 of the demo API (it runs 1.4.2 at start) after this long: a "
        "rolling restart on the same socket, so traffic sees no gap (default 300; 0: never)",
    )
    demo.add_argument(
        "--no-prometheus",
        action="store_true",
        help="do not start Prometheus and Alertmanager even when installed",
    )
    demo.add_argument(
        "--rules-dir",
        metavar="DIR",
        help="Prometheus rule files to load (default: the repository's alert_rules/)",
    )
    demo.set_defaults(func=_demo)
