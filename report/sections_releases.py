"""The report's Releases section: each release first seen in the period against the one before it.

The figures are `apiusage release-notes`'s (report/release_notes.py: the same windows, rows and
changed endpoints), one block per release, newest first; ApiReleaseRegression's firing (the
ALERTS series) is named next to the release it fired for.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from .charts import line_chart
from .page import Section, duration_text, milliseconds
from .release_notes import (
    DAY,
    MAX_ROWS,
    MIN_REQUESTS,
    P95_CHANGE,
    RATIO_CHANGE,
    Change,
    _Figures,
    _Notes,
    _percent,
    _visible,
    _when,
    _Window,
    _windows,
    changed_endpoints,
    previous_release,
    releases_by_service,
    too_little_traffic,
    traffic_rows,
)

if TYPE_CHECKING:
    from .build import _Report

__all__ = ["MAX_RELEASES", "releases_section"]

MAX_RELEASES = 10  # releases with a block of their own; the table lists MAX_ROWS
NAMED_ENDPOINTS = 3  # endpoints named in a release's "changed the most" line
_ALERT = 'alertname="ApiReleaseRegression",alertstate="firing"'
_SIGNALS = {"error_ratio": "5xx ratio", "latency_p95": "p95 latency"}


def _moves(c: Change) -> str:
    """What moved on one endpoint: only the figures past release-notes' thresholds."""
    parts = []
    for title, (a, b) in (("5xx ratio", c.errors), ("4xx ratio", c.client_errors)):
        if abs(b - a) >= RATIO_CHANGE - 1e-9:
            parts.append(f"{title} {_percent(a)} → {_percent(b)}")
    a95, b95 = c.p95
    if a95 and b95 is not None and abs(b95 / a95 - 1) >= P95_CHANGE - 1e-9:
        parts.append(f"p95 {milliseconds(a95)} → {milliseconds(b95)}")
    return f"{_visible(' '.join(c.endpoint))} ({', '.join(parts)})"


def _fired(report: _Report) -> dict[tuple[str, str], list[str]]:
    """(service, version) -> what ApiReleaseRegression fired on for it in the period."""
    out: dict[tuple[str, str], set[str]] = {}
    for m, _ in report.client.query(
        "max by (service, version, signal, method, route) "
        f"(max_over_time(ALERTS{report.f(_ALERT)}[{report.window}]))",
        report.now,
    ):
        signal = _SIGNALS.get(m.get("signal", ""), _visible(m.get("signal", "")) or "a figure")
        endpoint = f"{m.get('method', '')} {m.get('route', '')}".strip()
        what = f"{signal} on {_visible(endpoint)}" if endpoint else signal
        out.setdefault((m.get("service", ""), m.get("version", "")), set()).add(what)
    return {key: sorted(whats) for key, whats in out.items()}


def _fired_text(whats: list[str] | None) -> str:
    if not whats:
        return "-"
    shown = ", ".join(whats[:NAMED_ENDPOINTS])
    return shown + (f" and {len(whats) - NAMED_ENDPOINTS} more" if len(whats) > NAMED_ENDPOINTS else "")


def releases_section(report: _Report) -> Section:
    s = Section(
        "Releases",
        "Which releases went out in the period, and did each serve more errors or slower answers than "
        "the release before it, over the day before and after it was first seen?",
    )
    s.chart(
        "Requests per second by release",
        line_chart(
            report.series(
                f"sum by (service, version) (rate(api_release_requests_total{report.f()}[{report.rate}]))",
                "service",
                "version",
            )
        ),
    )
    # The release before one first seen early in the period may be older than the period.
    lookback = max(report.range, 30 * DAY)
    by_service = releases_by_service(report.client, report.f(), f"{lookback}s", report.now)
    start = report.now - report.range
    # Newest first; within a second, by service and version so that the page is stable.
    found = sorted(
        (
            (t, service, version)
            for service, rel in by_service.items()
            for version, t in rel.items()
            if t >= start
        ),
        key=lambda x: (-x[0], x[1], x[2]),
    )
    fired = _fired(report)
    rows = []
    for t, service, version in found[:MAX_ROWS]:
        before = previous_release(by_service[service], version)
        rows.append(
            [
                _visible(service),
                _visible(version),
                _when(t),
                "-" if before is None else _visible(before),
                _fired_text(fired.get((service, version))),
            ]
        )
    s.table(
        ["Service", "Release", "First seen", "Release before", "ApiReleaseRegression fired on"],
        rows,
        "No release was first seen in the period (are services setting service.version?).",
    )
    if len(found) > MAX_ROWS:
        s.note(f"And {len(found) - MAX_ROWS} more releases in the period.")
    for _, service, version in found[:MAX_RELEASES]:
        _release(s, report, by_service[service], service, version, fired.get((service, version)))
    if len(found) > MAX_RELEASES:
        s.note(
            f"The {MAX_RELEASES} newest releases are compared above; apiusage release-notes compares any "
            "other one."
        )
    return s


def _release(
    s: Section,
    report: _Report,
    releases: dict[str, float],
    service: str,
    version: str,
    fired: list[str] | None,
) -> None:
    """One release's block: its figures against the release before it, what moved, the alert."""
    notes = _Notes(report.client, service, report.now)
    before = previous_release(releases, version)
    v, name = _visible(version), _visible(service)
    s.heading(f"{name} {v}")
    command = f"apiusage release-notes --service {shlex.quote(service)} --version {shlex.quote(version)}"
    if before is None:
        mine, _, _ = _windows(releases, version, version, report.now)
        new, _ = notes.release(version, mine)
        s.note(
            f"First seen {_when(releases[version])}: the first release of {name} Prometheus knows, so "
            f"nothing to compare it with. Its figures from {_when(mine.start)} to {_when(mine.end)}:"
        )
        s.table(
            ["", v],
            [[title, after] for title, _, after, _ in traffic_rows(new, _Figures(), mine, mine)],
            "",
        )
        sentence = too_little_traffic(v, new)
        if sentence:
            s.note(sentence)
        return
    mine, theirs, full = _windows(releases, version, before, report.now)
    new, new_routes = notes.release(version, mine)
    old, old_routes = notes.release(before, theirs)
    p = _visible(before)
    s.note(
        f"First seen {_when(releases[version])}, after {p}. {v} from {_when(mine.start)} to "
        f"{_when(mine.end)}, against {p} from {_when(theirs.start)} to {_when(theirs.end)}."
    )
    if not full:
        s.note(
            f"{v} has been seen for {duration_text(mine.seconds)} (before it was replaced or until now), "
            "not a full day: each window is that long."
        )
    s.table(
        ["", f"{p} (before)", f"{v} (after)", "Change"],
        [list(row) for row in traffic_rows(new, old, mine, theirs)],
        "",
    )
    for who, figures in ((p, old), (v, new)):
        sentence = too_little_traffic(who, figures)
        if sentence:
            s.note(sentence)
    changes = changed_endpoints(
        notes, new, old, new_routes, old_routes, _Window(mine.start - mine.seconds, mine.start), mine
    )
    if changes is not None:
        top, total = changes
        if not top:
            s.note(
                f"No endpoint with at least {MIN_REQUESTS} requests in each release moved its 5xx or 4xx "
                f"ratio by {100 * RATIO_CHANGE:g} percentage point or its p95 by {100 * P95_CHANGE:g}%."
            )
        else:
            named = "; ".join(_moves(c) for c in top[:NAMED_ENDPOINTS])
            more = f"; and {total - NAMED_ENDPOINTS} more" if total > NAMED_ENDPOINTS else ""
            s.note(f"Endpoints that changed the most: {named}{more}.")
    if fired:
        s.note(f"ApiReleaseRegression fired for {v} in the period: {_fired_text(fired)}.")
    s.note(f"The client mix and the deprecated endpoints still called: {_visible(command)}")
