"""Business metrics read back from the state store: who uses what, who onboards, who leaves.

`build_report()` runs a fixed set of SQL queries (the same text on SQLite and
PostgreSQL) and returns plain dicts keyed by label tuples; the exporter turns
them into metric families.  Every value is computed from the store, so several
replicas sharing PostgreSQL report the same numbers, and a restart does not
reset or double anything.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .store import Store

__all__ = ["ConsumerReport", "build_report", "WINDOWS", "TTFS_BUCKETS", "week_start",
           "deprecated_endpoints", "ResolvedEndpoint", "consumer_trends", "is_at_risk",
           "deprecated_callers"]

DAY_MS = 86_400_000
WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
TTFS_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 259200.0, 604800.0)
COHORT_WEEKS = 12
UNUSED_AFTER_DAYS = 30
_PARAM = re.compile(r"\{[^{}]*\}")
_REPLACEMENT = re.compile(r"^(?:(?P<method>[A-Za-z]+) +)?(?P<route>/\S*)$")


def week_of(day: int) -> int:
    """Monday-based week number of a day number (1970-01-01 was a Thursday)."""
    return (day + 3) // 7


def week_start(week: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=week * 7 - 3)


@dataclass(frozen=True)
class ResolvedEndpoint:
    """A deprecated endpoint as observed in spans, with its catalog facts."""

    service: str
    method: str
    route: str
    sunset: dt.date | None = None
    replacement: tuple[str, str] | None = None  # (method, route) as observed, or as written


@dataclass
class ConsumerReport:
    generated_ms: int = 0
    active: dict[tuple, int] = field(default_factory=dict)
    new: dict[tuple, int] = field(default_factory=dict)
    ttfs: dict[tuple, tuple[list[int], float, int]] = field(default_factory=dict)
    endpoint_consumers: dict[tuple, int] = field(default_factory=dict)
    feature_consumers: dict[tuple, int] = field(default_factory=dict)
    feature_adoption: dict[tuple, float] = field(default_factory=dict)
    client_versions: dict[tuple, int] = field(default_factory=dict)
    deprecated_consumers: dict[tuple, int] = field(default_factory=dict)
    sunset: dict[tuple, float] = field(default_factory=dict)
    migrated: dict[tuple, int] = field(default_factory=dict)
    unused: dict[str, int] = field(default_factory=dict)
    last_called: dict[tuple, float] = field(default_factory=dict)
    cohorts: dict[tuple, float] = field(default_factory=dict)
    at_risk: dict[tuple, int] = field(default_factory=dict)


def _route_key(route: str) -> str:
    return _PARAM.sub("{}", route)


def deprecated_endpoints(store: Store, catalog) -> list[ResolvedEndpoint]:
    """Endpoints deprecated by the catalog or by their spans, matched to observed routes."""
    observed: dict[tuple[str, str, str], str] = {}
    flagged: set[tuple[str, str, str]] = set()
    for service, method, route, deprecated in store.query(
            "SELECT service, method, route, deprecated FROM endpoints"):
        observed[service, method, _route_key(route)] = route
        if deprecated:
            flagged.add((service, method, route))
    out: dict[tuple[str, str, str], ResolvedEndpoint] = {}
    for service in catalog.services if catalog is not None else ():
        for ep in service.endpoints:
            if not ep.deprecated:
                continue
            methods = [ep.method] if ep.method != "*" else sorted(
                {m for (s, m, r) in observed if s == service.name and r == _route_key(ep.route)})
            for method in methods:
                route = observed.get((service.name, method, _route_key(ep.route)), ep.route)
                replacement = None
                m = _REPLACEMENT.match(ep.replacement or "")
                if m:
                    r_method = (m.group("method") or method).upper()
                    r_route = m.group("route")
                    replacement = (r_method, observed.get((service.name, r_method, _route_key(r_route)),
                                                          r_route))
                out[service.name, method, route] = ResolvedEndpoint(
                    service.name, method, route, ep.sunset, replacement)
    for key in flagged:
        out.setdefault(key, ResolvedEndpoint(*key))
    return sorted(out.values(), key=lambda e: (e.service, e.route, e.method))


def build_report(store: Store, now_ms: int, catalog=None) -> ConsumerReport:
    report = ConsumerReport(generated_ms=now_ms)
    today = now_ms // DAY_MS
    q = store.query

    active_by_plan: dict[tuple, int] = {}
    for window, days in WINDOWS.items():
        since = now_ms - days * DAY_MS
        for service, plan, n in q("SELECT service, plan_tier, COUNT(*) FROM consumers "
                                  "WHERE last_seen >= ? GROUP BY service, plan_tier", (since,)):
            report.active[service, plan, window] = n
            active_by_plan[service, plan, window] = n
        for service, method, route, n in q(
                "SELECT service, method, route, COUNT(DISTINCT consumer_id) FROM activity "
                "WHERE last_call >= ? GROUP BY service, method, route", (since,)):
            report.endpoint_consumers[service, method, route, window] = n
        for service, feature, n in q(
                "SELECT service, feature, COUNT(DISTINCT consumer_id) FROM activity "
                "WHERE last_call >= ? AND feature <> '' GROUP BY service, feature", (since,)):
            report.feature_consumers[service, feature, window] = n
        for service, feature, plan, n in q(
                "SELECT a.service, a.feature, c.plan_tier, COUNT(DISTINCT a.consumer_id) "
                "FROM activity a JOIN consumers c "
                "ON c.service = a.service AND c.consumer_id = a.consumer_id "
                "WHERE a.last_call >= ? AND a.feature <> '' "
                "GROUP BY a.service, a.feature, c.plan_tier", (since,)):
            total = active_by_plan.get((service, plan, window), 0)
            report.feature_adoption[service, feature, plan, window] = n / total if total else 0.0
        for service, name, version, n in q(
                "SELECT service, client_name, client_version, COUNT(DISTINCT consumer_id) "
                "FROM activity WHERE last_call >= ? "
                "GROUP BY service, client_name, client_version", (since,)):
            report.client_versions[service, name, version, window] = n

    for service, plan, n in q("SELECT service, first_plan_tier, COUNT(*) FROM consumers "
                              "GROUP BY service, first_plan_tier"):
        report.new[service, plan] = n
    _onboarding(report, q("SELECT service, first_plan_tier, first_success - first_seen "
                          "FROM consumers WHERE first_success IS NOT NULL"))
    _deprecations(report, store, catalog, now_ms)
    _catalog_usage(report, store, catalog, now_ms)
    _cohorts(report, store, today)
    _at_risk(report, store, today)
    return report


def _onboarding(report: ConsumerReport, rows: Iterable[tuple]) -> None:
    n = len(TTFS_BUCKETS) + 1
    for service, plan, delta_ms in rows:
        counts, total, count = report.ttfs.get((service, plan), ([0] * n, 0.0, 0))
        seconds = max(0, delta_ms) / 1000
        i = next((i for i, b in enumerate(TTFS_BUCKETS) if seconds <= b), n - 1)
        counts[i] += 1
        report.ttfs[service, plan] = (counts, total + seconds, count + 1)


def _deprecations(report: ConsumerReport, store: Store, catalog, now_ms: int) -> None:
    for ep in deprecated_endpoints(store, catalog):
        key = (ep.service, ep.method, ep.route)
        if ep.sunset is not None:
            sunset = dt.datetime.combine(ep.sunset, dt.time(), dt.timezone.utc)
            report.sunset[key] = sunset.timestamp()
        for window, days in WINDOWS.items():
            report.deprecated_consumers[(*key, window)] = report.endpoint_consumers.get(
                (*key, window), 0)
            if ep.replacement is None:
                continue
            (n,), = store.query(
                "SELECT COUNT(*) FROM (SELECT consumer_id, MIN(day) AS since FROM activity "
                "WHERE service = ? AND method = ? AND route = ? AND last_call >= ? "
                "GROUP BY consumer_id) dep WHERE EXISTS (SELECT 1 FROM activity r "
                "WHERE r.service = ? AND r.consumer_id = dep.consumer_id AND r.method = ? "
                "AND r.route = ? AND r.day >= dep.since)",
                (*key, now_ms - days * DAY_MS, ep.service, *ep.replacement))
            report.migrated[(*key, window)] = n


def _catalog_usage(report: ConsumerReport, store: Store, catalog, now_ms: int) -> None:
    if catalog is None:
        return
    last_seen = {(s, m, _route_key(r)): (r, t) for s, m, r, t in store.query(
        "SELECT service, method, route, last_seen FROM endpoints")}
    cutoff = now_ms - UNUSED_AFTER_DAYS * DAY_MS
    for service in catalog.services:
        unused = 0
        for ep in service.endpoints:
            methods = [ep.method] if ep.method != "*" else sorted(
                {m for (s, m, r) in last_seen if s == service.name and r == _route_key(ep.route)})
            seen = [(m, *last_seen[service.name, m, _route_key(ep.route)]) for m in methods
                    if (service.name, m, _route_key(ep.route)) in last_seen]
            for method, route, at in seen:
                report.last_called[service.name, method, route] = at / 1000
            if not seen or max(at for _, _, at in seen) < cutoff:
                unused += 1
        report.unused[service.name] = unused


def _cohorts(report: ConsumerReport, store: Store, today: int) -> None:
    this_week = week_of(today)
    first_week = this_week - COHORT_WEEKS + 1
    first_day = first_week * 7 - 3
    cohort_of: dict[tuple[str, str], int] = {}
    sizes: dict[tuple[str, int], int] = defaultdict(int)
    for service, consumer, first_seen in store.query(
            "SELECT service, consumer_id, first_seen FROM consumers WHERE first_seen >= ?",
            (first_day * DAY_MS,)):
        week = week_of(first_seen // DAY_MS)
        cohort_of[service, consumer] = week
        sizes[service, week] += 1
    active: dict[tuple[str, int, int], int] = defaultdict(int)
    for service, consumer, week in store.query(
            "SELECT DISTINCT service, consumer_id, (day + 3) / 7 FROM activity WHERE day >= ?",
            (first_day,)):
        cohort = cohort_of.get((service, consumer))
        if cohort is not None and week >= cohort:
            active[service, cohort, int(week) - cohort] += 1
    for (service, cohort), size in sizes.items():
        label = week_start(cohort).isoformat()
        for since in range(this_week - cohort + 1):
            report.cohorts[service, label, str(since)] = active.get((service, cohort, since), 0) / size


def consumer_trends(store: Store, today: int) -> list[tuple]:
    """Per consumer: (service, consumer, plan, client, version, last_seen, last 7 days' calls,
    weekly average of the 4 weeks before)."""
    recent_from = today - 6
    rows = store.query(
        "SELECT c.service, c.consumer_id, c.plan_tier, c.client_name, c.client_version, "
        "c.last_seen, SUM(CASE WHEN a.day >= ? THEN a.calls ELSE 0 END), "
        "SUM(CASE WHEN a.day < ? THEN a.calls ELSE 0 END) "
        "FROM activity a JOIN consumers c "
        "ON c.service = a.service AND c.consumer_id = a.consumer_id "
        "WHERE a.day >= ? AND a.day <= ? "
        "GROUP BY c.service, c.consumer_id, c.plan_tier, c.client_name, c.client_version, "
        "c.last_seen",
        (recent_from, recent_from, today - 34, today))
    return [(*r[:7], r[7] / 4) for r in rows]


def is_at_risk(recent: float, weekly_average: float) -> bool:
    """Last 7 days below half the previous 4 weeks' weekly average."""
    return weekly_average > 0 and recent < 0.5 * weekly_average


def _at_risk(report: ConsumerReport, store: Store, today: int) -> None:
    for service, _, plan, _, _, _, recent, average in consumer_trends(store, today):
        key = (service, plan)
        report.at_risk[key] = report.at_risk.get(key, 0) + is_at_risk(recent, average)


def deprecated_callers(store: Store, service: str, method: str, route: str,
                       since_ms: int) -> list[tuple]:
    """Consumers still calling an endpoint since `since_ms`, busiest first:
    (consumer, plan, client, version, last call ms, calls)."""
    return store.query(
        "SELECT a.consumer_id, c.plan_tier, c.client_name, c.client_version, "
        "MAX(a.last_call), SUM(a.calls) FROM activity a JOIN consumers c "
        "ON c.service = a.service AND c.consumer_id = a.consumer_id "
        "WHERE a.service = ? AND a.method = ? AND a.route = ? AND a.last_call >= ? "
        "GROUP BY a.consumer_id, c.plan_tier, c.client_name, c.client_version "
        "ORDER BY SUM(a.calls) DESC, a.consumer_id",
        (service, method, route, since_ms))
