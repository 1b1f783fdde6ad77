"""`apiusage release-notes`: markdown for a release's notes, from Prometheus.

A release is a `version` of a service, first seen when `api_release_first_seen_timestamp_seconds`
says. It is compared with the release before it (by first sight; `api_release_rank` + 1) or the
one `--against` names, each over a window of the same length: the new release over the day
after it was first seen (shorter when it is younger, or replaced sooner), the other one over
the same length of time before the next release replaced it. The client mix, the per-route
latency and the deprecated endpoints have no version label: they compare the day before the
new release with the day after.
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
import re
from dataclasses import dataclass

from .page import count as _count
from .page import duration_text as _duration_text
from .page import milliseconds as _milliseconds
from .prometheus import PrometheusClient
from .prometheus import string as _string
from .text import visible as _visible

__all__ = [
    "DAY",
    "LOOKBACK",
    "MIN_REQUESTS",
    "P95_CHANGE",
    "RATIO_CHANGE",
    "Change",
    "ReleaseNotesError",
    "changed_endpoints",
    "previous_release",
    "release_notes",
    "releases_by_service",
    "too_little_traffic",
    "traffic_rows",
]

DAY = 86400
LOOKBACK = "30d"  # how far back releases are looked for: a release out of api_release_rank's top is kept
MIN_REQUESTS = 100  # requests in a window below which a ratio or a p95 says nothing
RATIO_CHANGE = 0.01  # an endpoint's 5xx or 4xx ratio moving by a percentage point or more
P95_CHANGE = 0.2  # an endpoint's p95 moving by 20 % or more
TOP_CLIENTS = 5  # per window, in the client mix
MAX_ROWS = 20  # per table; the rest is counted
OTHER = "__other__"  # the label limits' fold: not a release, not a client


class ReleaseNotesError(Exception):
    """The notes cannot be written: no such release, nothing to compare with."""


@dataclass(frozen=True)
class _Window:
    start: float
    end: float

    @property
    def seconds(self) -> int:
        # At least a second: a first sight "now" (or ahead of Prometheus's clock) is no PromQL error.
        return max(1, int(round(self.end - self.start)))


@dataclass
class _Figures:
    requests: float = 0.0
    errors: float = 0.0
    client_errors: float = 0.0
    p95: float | None = None

    def add(self, status_class: str, value: float) -> None:
        self.requests += value
        if status_class == "5xx":
            self.errors += value
        elif status_class == "4xx":
            self.client_errors += value


_MARKDOWN = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")


def _text(text: str) -> str:
    """A label value as markdown text: control characters shown, markup escaped."""
    return _MARKDOWN.sub(r"\\\1", _visible(text))


def _code(text: str) -> str:
    """A label value as a code span (endpoints and clients), safe inside a table cell."""
    text = _visible(text).replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole >= MIN_REQUESTS else None


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.2f}%"


def _points(before: float | None, after: float | None) -> str:
    return "-" if before is None or after is None else f"{100 * (after - before):+.2f} pp"


def _relative(before: float | None, after: float | None) -> str:
    if before is None or after is None or not before:
        return "-"
    return f"{100 * (after / before - 1):+.1f}%"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Notes:
    def __init__(self, client: PrometheusClient, service: str, now: float) -> None:
        self.client = client
        self.service = service
        self.now = now
        self.sel = f"service={_string(service)}"

    def f(self, extra: str = "") -> str:
        return "{" + ",".join(x for x in (self.sel, extra) if x) + "}"

    def releases(self) -> dict[str, float]:
        """Every release of the service seen in the lookback, with its first sight."""
        return releases_by_service(self.client, self.f(), LOOKBACK, self.now).get(self.service, {})

    def increase(self, family: str, by: str, window: _Window, extra: str = "") -> list[tuple[dict, float]]:
        return self.client.query(
            f"sum by ({by}) (increase({family}{self.f(extra)}[{window.seconds}s]))", window.end
        )

    def release(self, version: str, window: _Window) -> tuple[_Figures, dict[tuple[str, str], _Figures]]:
        """The release's figures in its window, and per method and route."""
        total, routes = _Figures(), dict[tuple[str, str], _Figures]()
        version_sel = f"version={_string(version)}"
        for m, v in self.increase(
            "api_release_requests_total", "method, route, status_class", window, version_sel
        ):
            cls = m.get("status_class", "")
            total.add(cls, v)
            routes.setdefault((m.get("method", ""), m.get("route", "")), _Figures()).add(cls, v)
        if total.requests >= MIN_REQUESTS:
            p95 = self.client.query(
                "histogram_quantile(0.95, sum by (le) (increase("
                f"api_release_request_duration_seconds_bucket{self.f(version_sel)}[{window.seconds}s])))",
                window.end,
            )
            total.p95 = _finite(p95[0][1]) if p95 else None
        return total, routes

    def route_p95(self, window: _Window) -> dict[tuple[str, str], float | None]:
        """p95 per method and route in the window (every version), where the traffic allows."""
        counts = {
            (m.get("method", ""), m.get("route", "")): v
            for m, v in self.increase("api_request_duration_seconds_count", "method, route", window)
        }
        out: dict[tuple[str, str], float | None] = {}
        for m, v in self.client.query(
            "histogram_quantile(0.95, sum by (method, route, le) (increase("
            f"api_request_duration_seconds_bucket{self.f()}[{window.seconds}s])))",
            window.end,
        ):
            key = (m.get("method", ""), m.get("route", ""))
            out[key] = _finite(v) if counts.get(key, 0.0) >= MIN_REQUESTS else None
        return out

    def by_label(self, family: str, label: str, window: _Window, extra: str = "") -> dict[str, float]:
        return {m.get(label, ""): v for m, v in self.increase(family, label, window, extra)}


def releases_by_service(
    client: PrometheusClient, matcher: str, lookback: str, now: float
) -> dict[str, dict[str, float]]:
    """service -> {version: first seen} for the releases the markers name in the lookback."""
    family = "api_release_first_seen_timestamp_seconds"
    rows = client.query(f"min by (service, version) (last_over_time({family}{matcher}[{lookback}]))", now)
    out: dict[str, dict[str, float]] = {}
    for m, v in rows:
        if m.get("version") and m.get("version") != OTHER and m.get("service") != OTHER:
            out.setdefault(m.get("service", ""), {})[m["version"]] = v
    return out


def previous_release(releases: dict[str, float], version: str) -> str | None:
    """The release first seen last before `version` (None: it is the first one known)."""
    earlier = [r for r, t in releases.items() if t < releases[version]]
    return max(earlier, key=lambda r: (releases[r], r)) if earlier else None


def _windows(
    releases: dict[str, float], version: str, against: str, now: float
) -> tuple[_Window, _Window, bool]:
    """The two releases' windows, of one length; and whether the new one's is a full day."""

    def replaced(v: str) -> float:
        later = [t for other, t in releases.items() if t > releases[v]]
        return min([now, *later])

    start = releases[version]
    end = min(start + DAY, replaced(version))
    length = max(0.0, end - start)
    other_end = replaced(against)
    other = _Window(max(releases[against], other_end - length), other_end)
    return _Window(start, start + length), other, length >= DAY


def release_notes(
    client: PrometheusClient, service: str, version: str, against: str | None, now: float
) -> str:
    """The markdown; ReleaseNotesError when a release is unknown or there is nothing to compare."""
    for option, value in (("--service", service), ("--version", version), ("--against", against)):
        if value is not None and not value.strip():
            # An empty matcher would select the series that have no such label at all.
            raise ReleaseNotesError(f"{option} is empty")
    notes = _Notes(client, service, now)
    releases = notes.releases()
    name = _visible(service)  # the messages are one line, whatever the arguments hold
    if not releases:
        raise ReleaseNotesError(f"Prometheus knows no release of {name} (in the last {LOOKBACK})")
    known = ", ".join(_visible(r) for r in sorted(releases, key=lambda r: releases[r]))
    if version not in releases:
        raise ReleaseNotesError(f"no release {_visible(version)} of {name} in Prometheus (known: {known})")
    if against is None:
        against = previous_release(releases, version)
        if against is None:
            raise ReleaseNotesError(
                f"{name} {_visible(version)} is the first release Prometheus knows: nothing to compare it "
                "with (name one with --against)"
            )
    elif against not in releases:
        raise ReleaseNotesError(f"no release {_visible(against)} of {name} in Prometheus (known: {known})")
    elif against == version:
        raise ReleaseNotesError(f"--against {_visible(against)} is the release itself: name another one")
    mine, theirs, full = _windows(releases, version, against, now)
    new, new_routes = notes.release(version, mine)
    old, old_routes = notes.release(against, theirs)

    v, p = _text(version), _text(against)
    lines = [
        f"# {_text(service)} {v}",
        "",
        f"- First seen: {_when(releases[version])}",
        f"- Compared with: {p}, first seen {_when(releases[against])}",
        f"- {v}: {_when(mine.start)} to {_when(mine.end)}",
        f"- {p}: {_when(theirs.start)} to {_when(theirs.end)}",
    ]
    if not full:
        lines.append(
            f"- {v} has been seen for {_duration_text(mine.seconds)} (before it was replaced or until now), "
            "not a full day: each window is that long"
        )
    lines += ["", "## Traffic and reliability", ""]
    lines += _traffic(v, p, new, old, mine, theirs)
    before = _Window(mine.start - mine.seconds, mine.start)
    span = _duration_text(mine.seconds)
    lines += ["", "## Client mix", ""]
    lines += _client_mix(notes, v, before, mine, span)
    lines += ["", "## Endpoints whose behaviour changed", ""]
    lines += _changes(notes, v, p, new, old, new_routes, old_routes, before, mine, span)
    lines += ["", "## Deprecated endpoints still called", ""]
    lines += _deprecated(notes, v, before, mine, span)
    return "\n".join(lines) + "\n"


def traffic_rows(
    new: _Figures, old: _Figures, mine: _Window, theirs: _Window
) -> list[tuple[str, str, str, str]]:
    """(figure, the release before, the release, change): requests, per hour, 5xx and 4xx ratios, p95."""

    def per_hour(f: _Figures, w: _Window) -> float | None:
        return f.requests * 3600 / w.seconds if w.seconds else None

    new_hour, old_hour = per_hour(new, mine), per_hour(old, theirs)
    rows = [
        (
            "Requests",
            _count(old.requests),
            _count(new.requests),
            # Totals over windows of different lengths do not compare; the rates per hour do.
            _relative(old.requests, new.requests) if mine.seconds == theirs.seconds else "-",
        ),
        (
            "Requests per hour",
            "-" if old_hour is None else _count(old_hour),
            "-" if new_hour is None else _count(new_hour),
            _relative(old_hour, new_hour),
        ),
    ]
    for title, part in (("Error ratio (5xx)", "errors"), ("4xx ratio", "client_errors")):
        a = _ratio(getattr(old, part), old.requests)
        b = _ratio(getattr(new, part), new.requests)
        rows.append((title, _percent(a), _percent(b), _points(a, b)))
    rows.append(("p95 latency", _milliseconds(old.p95), _milliseconds(new.p95), _relative(old.p95, new.p95)))
    return rows


def too_little_traffic(name: str, figures: _Figures) -> str | None:
    """The sentence saying a release's window had too few requests to compare; None when enough."""
    if figures.requests >= MIN_REQUESTS:
        return None
    return (
        f"{name} served {_count(figures.requests)} requests in its window, fewer than "
        f"{MIN_REQUESTS}: too little traffic for its ratios and p95 to mean anything."
    )


def _traffic(v: str, p: str, new: _Figures, old: _Figures, mine: _Window, theirs: _Window) -> list[str]:
    lines = [f"| | {p} | {v} | Change |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in traffic_rows(new, old, mine, theirs)]
    for name, figures in ((p, old), (v, new)):
        sentence = too_little_traffic(name, figures)
        if sentence:
            lines += ["", sentence]
    return lines


def _client_mix(notes: _Notes, v: str, before: _Window, after: _Window, span: str) -> list[str]:
    shares = []
    for window in (before, after):
        counts = {
            k: n
            for k, n in notes.by_label("api_client_requests_total", "client_name", window).items()
            if n > 0
        }
        total = sum(counts.values())
        shares.append({k: n / total for k, n in counts.items()} if total >= MIN_REQUESTS else None)
    old, new = shares
    head = f"Share of the service's requests by client, {span} before {v} was first seen and {span} after."
    if old is None or new is None:
        return [head, "", f"Too little traffic to compare (fewer than {MIN_REQUESTS} requests in a window)."]

    def top(s: dict[str, float]) -> list[str]:
        return sorted((k for k in s if k != OTHER), key=lambda k: (-s[k], k))[:TOP_CLIENTS]

    shown = sorted(set(top(old)) | set(top(new)), key=lambda k: (-new.get(k, 0.0), -old.get(k, 0.0), k))
    lines = [head, "", "| Client | Before | After | Change |", "|---|---:|---:|---:|"]
    for k in shown:
        a, b = old.get(k, 0.0), new.get(k, 0.0)
        lines.append(f"| {_code(k)} | {100 * a:.1f}% | {100 * b:.1f}% | {100 * (b - a):+.1f} pp |")
    rest = (set(old) | set(new)) - set(shown)
    if rest:
        a, b = sum(old.get(k, 0.0) for k in rest), sum(new.get(k, 0.0) for k in rest)
        what = "other clients" if rest != {OTHER} else "clients beyond the label limit"
        lines.append(f"| {len(rest)} {what} | {100 * a:.1f}% | {100 * b:.1f}% | {100 * (b - a):+.1f} pp |")
    return lines


@dataclass(frozen=True)
class Change:
    """An endpoint whose behaviour moved between two releases: (before, after) of each figure."""

    endpoint: tuple[str, str]  # method, route
    before: _Figures
    after: _Figures
    errors: tuple[float, float]  # 5xx ratio, by version
    client_errors: tuple[float, float]  # 4xx ratio, by version
    p95: tuple[float | None, float | None]  # the route's p95, every version, before and after the marker

    @property
    def moved(self) -> float:
        return max(abs(self.errors[1] - self.errors[0]), abs(self.client_errors[1] - self.client_errors[0]))


def changed_endpoints(
    notes: _Notes,
    new: _Figures,
    old: _Figures,
    new_routes: dict[tuple[str, str], _Figures],
    old_routes: dict[tuple[str, str], _Figures],
    before: _Window,
    after: _Window,
) -> tuple[list[Change], int] | None:
    """The (at most MAX_ROWS) endpoints whose ratio or p95 moved the most, and how many moved in
    all; None when either release had too little traffic to compare."""
    if new.requests < MIN_REQUESTS or old.requests < MIN_REQUESTS:
        return None
    p95_before, p95_after = notes.route_p95(before), notes.route_p95(after)
    rows = []
    for key in sorted(set(new_routes) & set(old_routes)):
        a, b = old_routes[key], new_routes[key]
        if a.requests < MIN_REQUESTS or b.requests < MIN_REQUESTS:
            continue
        change = Change(
            key,
            a,
            b,
            (a.errors / a.requests, b.errors / b.requests),
            (a.client_errors / a.requests, b.client_errors / b.requests),
            (p95_before.get(key), p95_after.get(key)),
        )
        lat = change.p95
        slower = abs(lat[1] / lat[0] - 1) if lat[0] and lat[1] is not None else 0.0
        # The tolerance keeps a move of exactly the threshold in, whatever the float rounding.
        if change.moved < RATIO_CHANGE - 1e-9 and slower < P95_CHANGE - 1e-9:
            continue
        rows.append(change)
    return heapq.nsmallest(MAX_ROWS, rows, key=lambda c: (-c.moved, c.endpoint)), len(rows)


def _changes(
    notes: _Notes,
    v: str,
    p: str,
    new: _Figures,
    old: _Figures,
    new_routes: dict[tuple[str, str], _Figures],
    old_routes: dict[tuple[str, str], _Figures],
    before: _Window,
    after: _Window,
    span: str,
) -> list[str]:
    head = (
        f"Endpoints with at least {MIN_REQUESTS} requests in each release whose 5xx or 4xx ratio moved by "
        f"{100 * RATIO_CHANGE:g} percentage point or more (by version), or whose p95 moved by "
        f"{100 * P95_CHANGE:g}% or more ({span} before and after {v} was first seen)."
    )
    found = changed_endpoints(notes, new, old, new_routes, old_routes, before, after)
    if found is None:
        return [head, "", "Not compared: too little traffic (see above)."]
    changes, total = found
    if not changes:
        return [head, "", "None."]
    lines = [
        head,
        "",
        f"| Endpoint | Requests {p} | Requests {v} | 5xx ratio | 4xx ratio | p95 |",
        "|---|---:|---:|---|---|---|",
    ]
    for c in changes:
        lines.append(
            f"| {_code(' '.join(c.endpoint))} | {_count(c.before.requests)} | {_count(c.after.requests)} "
            f"| {_percent(c.errors[0])} → {_percent(c.errors[1])} "
            f"| {_percent(c.client_errors[0])} → {_percent(c.client_errors[1])} "
            f"| {_milliseconds(c.p95[0])} → {_milliseconds(c.p95[1])} |"
        )
    if total > MAX_ROWS:
        lines += ["", f"And {total - MAX_ROWS} more."]
    return lines


def _deprecated(notes: _Notes, v: str, before: _Window, after: _Window, span: str) -> list[str]:
    def by_endpoint(window: _Window) -> dict[tuple[str, str], float]:
        return {
            (m.get("method", ""), m.get("route", "")): n
            for m, n in notes.increase("api_requests_total", "method, route", window, 'deprecated="true"')
        }

    now, then = by_endpoint(after), by_endpoint(before)
    clients: dict[tuple[str, str], dict[str, float]] = {}
    for m, n in notes.increase("api_deprecated_requests_total", "method, route, client_name", after):
        key = (m.get("method", ""), m.get("route", ""))
        clients.setdefault(key, {})[m.get("client_name", "")] = n
    head = f"Endpoints marked deprecated that were called in the {span} after {v} was first seen."
    called = sorted((k for k, n in now.items() if round(n) > 0), key=lambda k: (-now[k], k))
    if not called:
        return [head, "", "None."]
    lines = [
        head,
        "",
        "| Endpoint | Requests after | Requests before | Clients after |",
        "|---|---:|---:|---|",
    ]
    for key in called[:MAX_ROWS]:
        by_client = {c: n for c, n in clients.get(key, {}).items() if round(n) > 0}
        names = sorted(by_client, key=lambda c: (-by_client[c], c))
        who = ", ".join(f"{_code(c)} ({_count(by_client[c])})" for c in names[:3])
        if len(names) > 3:
            who += f" and {len(names) - 3} more"
        lines.append(
            f"| {_code(' '.join(key))} | {_count(now[key])} | {_count(then.get(key, 0.0))} | {who or '-'} |"
        )
    if len(called) > MAX_ROWS:
        lines += ["", f"And {len(called) - MAX_ROWS} more."]
    return lines
