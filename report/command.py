"""`apiusage report` and `apiusage release-notes`: registered on the main parser by `apiusage.cli`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the command module imports nothing of its tool at start-up
    from .build import PrometheusClient

__all__ = ["register"]


def _duration(text: str) -> int:
    units = {"h": 3600, "d": 86400, "w": 604800}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise argparse.ArgumentTypeError(f"must be like 12h, 7d or 2w (got {text!r})")
    return int(text[:-1]) * units[text[-1]]


def _prometheus(url: str) -> PrometheusClient | None:
    """A PrometheusClient that answered, or None after saying in one line why not."""
    from .build import PrometheusClient, PrometheusError

    client = PrometheusClient(url)
    try:
        client.check()
    except PrometheusError as exc:
        print(f"apiusage: {exc} (set --prometheus to its URL)", file=sys.stderr)
        return None
    return client


def _report(args: argparse.Namespace) -> int:
    """Write the HTML usage report from a Prometheus."""
    import time
    from pathlib import Path

    from .build import build_report, render_html

    client = _prometheus(args.prometheus)
    if client is None:
        return 2
    now = time.time()
    sections = build_report(client, args.range, now, args.service)
    page = render_html(sections, args.prometheus, args.range, now, args.service)
    try:
        Path(args.output).write_text(page, encoding="utf-8")
    except OSError as exc:
        print(f"apiusage: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    failed = sum(1 for s in sections if not s.question)
    print(
        f"wrote {args.output} ({len(sections)} sections"
        + (f", {failed} could not be built" if failed else "")
        + ")"
    )
    return 0


def _release_notes(args: argparse.Namespace) -> int:
    """Print markdown release notes for one release, from a Prometheus."""
    import time

    from .build import PrometheusError
    from .release_notes import ReleaseNotesError, release_notes

    client = _prometheus(args.prometheus)
    if client is None:
        return 2
    try:
        text = release_notes(client, args.service, args.version, args.against, time.time())
    except PrometheusError as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 2
    except ReleaseNotesError as exc:
        print(f"apiusage: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `apiusage report` to the main parser."""
    report = commands.add_parser("report", help="write a self-contained HTML usage report")
    report.add_argument(
        "--prometheus",
        default="http://localhost:9090",
        metavar="URL",
        help="Prometheus base URL (default: %(default)s, the demo's)",
    )
    report.add_argument("-o", "--output", default="apiusage-report.html", metavar="FILE")
    report.add_argument(
        "--range",
        type=_duration,
        default=7 * 86400,
        metavar="PERIOD",
        help="period to cover: 12h, 7d, 2w (default 7d)",
    )
    report.add_argument("--service", help="only this service")
    report.set_defaults(func=_report)
    notes = commands.add_parser(
        "release-notes", help="print markdown release notes: a release against the one before it"
    )
    notes.add_argument("--service", required=True)
    notes.add_argument("--version", required=True, help="the release (its service.version)")
    notes.add_argument(
        "--against", metavar="PREV", help="the release to compare with (default: the one before)"
    )
    notes.add_argument(
        "--prometheus",
        default="http://localhost:9090",
        metavar="URL",
        help="Prometheus base URL (default: %(default)s, the demo's)",
    )
    notes.set_defaults(func=_release_notes)
