"""Business metrics read back from the state store: who uses what, who onboards, who leaves.

`build_report()` runs a fixed set of SQL queries (the same text on SQLite and
PostgreSQL) and returns plain dicts keyed by label tuples; the exporter turns
them into metric families.  Every value is computed from the store, so several
replicas sharing PostgreSQL report the same numbers, and a restart does not
reset or double anything.

Window counts read the per-pair "last seen" tables: a consumer is in an
endpoint's 7d window when its one row for that endpoint has `last_call` in it,
so one pass over the pairs counts all three windows, exactly (docs/state.md).
Only a label past its limit needs `COUNT(DISTINCT)`: `__other__` merges pairs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from apiusage.conventions.routes import route_key

from ..config import LimitsConfig
from ..derive.routes import catalog_key
from ..derive.series import OVERFLOW_VALUE, sanitize_label_value
from .folding import Folder, Keep, folded_columns, merge_histograms
from .schema import TTFS_BUCKETS, ttfs_bucket_sql
from .store import DAY_MS, Store

if TYPE_CHECKING:
    from apiusage.conventions.catalog import Catalog

__all__ = [
    "ConsumerReport",
    "build_report",
    "WINDOWS",
    "TTFS_BUCKETS",
    "week_start",
    "deprecated_endpoints",
    "ResolvedEndpoint",
    "consumer_trends",
    "is_at_risk",
    "deprecated_callers",
    "unused_parameters",
    "UnusedParameters",
]

WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
COHORT_WEEKS = 12
UNUSED_AFTER_DAYS = 30
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
    unused: dict[tuple, int] = field(default_factory=dict)
    last_called: dict[tuple, float] = field(default_factory=dict)
    cohorts: dict[tuple, float] = field(default_factory=dict)
    at_risk: dict[tuple, int] = field(default_factory=dict)
    parameter_consumers: dict[tuple, int] = field(default_factory=dict)
    feedback_consumers: dict[tuple, int] = field(default_factory=dict)
    unused_parameters: dict[tuple, int] = field(default_factory=dict)
    # (metric, label) → (distinct values folded into __other__, source series folded)
    folded: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    # Experiments (issue 16): consumers by the variant first assigned, and those later seen in
    # another variant, per (service, experiment).
    experiment_consumers: dict[tuple, int] = field(default_factory=dict)
    experiment_contaminated: dict[tuple, int] = field(default_factory=dict)
    # Release markers (issue 16): (service, version) → first seen (Unix s), and rank (0 = newest)
    release_first_seen: dict[tuple, float] = field(default_factory=dict)
    release_rank: dict[tuple, int] = field(default_factory=dict)
    # Experiment checks (issue 16), the verdict of `apiusage experiments report` per experiment
    # of the experiments file, computed on the leader's refresh when the statistics are installed:
    # (service, experiment) → 1 while it runs (its start <= today < start + planned_days), else 0;
    experiment_running: dict[tuple, int] = field(default_factory=dict)
    # (service, experiment) → the SRM chi-square p-value, and 1 when it fails (verdict blocked);
    experiment_srm_p_value: dict[tuple, float] = field(default_factory=dict)
    experiment_srm_mismatch: dict[tuple, int] = field(default_factory=dict)
    # (service, experiment, variant, metric), per treatment: 1 when the guardrail failed, else 0;
    # and every tested metric's Holm-adjusted p-value.
    experiment_guardrail_failed: dict[tuple, int] = field(default_factory=dict)
    experiment_p_value: dict[tuple, float] = field(default_factory=dict)


def deprecated_endpoints(store: Store, catalog: Catalog | None) -> list[ResolvedEndpoint]:
    """Endpoints deprecated by the catalog or by their spans, matched to observed routes.

    A catalog entry matches every observed spelling of its route (`/v1/reports/:reportId`,
    and `/v1/reports/{id}` from spans without `http.route`): each gets its sunset and migration.
    """
    observed: dict[tuple[str, str, str], list[str]] = {}
    # (service, key) → its observed methods, for `*` entries: one lookup, not a scan per entry.
    methods_of: dict[tuple[str, str], set[str]] = {}
    flagged: set[tuple[str, str, str]] = set()
    for service, method, route, deprecated in store.query(
        "SELECT service, method, route, deprecated FROM endpoints"
    ):
        key = catalog_key(route)
        if key is not None:  # an unreadable route or a placeholder matches no catalog entry
            observed.setdefault((service, method, key), []).append(route)
            methods_of.setdefault((service, key), set()).add(method)
        if deprecated:
            flagged.add((service, method, route))
    out: dict[tuple[str, str, str], ResolvedEndpoint] = {}
    for service in catalog.services if catalog is not None else ():
        for ep in service.endpoints:
            if not ep.deprecated:
                continue
            key = route_key(ep.route)
            methods = (
                [ep.method]
                if ep.method != "*"
                else sorted(methods_of.get((service.name, key), ()) if key is not None else ())
            )
            for method in methods:
                replacement = None
                m = _REPLACEMENT.match(ep.replacement or "")
                if m:
                    r_method = (m.group("method") or method).upper()
                    r_route = m.group("route")
                    r_key = route_key(r_route)
                    # The replacement as observed (its first spelling), else as written.
                    spellings = (r_key is not None and observed.get((service.name, r_method, r_key))) or [
                        r_route
                    ]
                    replacement = (r_method, min(spellings))
                # An unreadable route (a hand-built catalog's) matches no observed one: as written.
                routes = key is not None and observed.get((service.name, method, key))
                for route in routes or [ep.route]:
                    out[service.name, method, route] = ResolvedEndpoint(
                        service.name, method, route, ep.sunset, replacement
                    )
    for endpoint in flagged:
        out.setdefault(endpoint, ResolvedEndpoint(*endpoint))
    return sorted(out.values(), key=lambda e: (e.service, e.route, e.method))


# Distinct-consumer families read from a pair table (one row per consumer and labels, with its
# last call): SELECT columns, their label names, the FROM … WHERE clause (its `?`: the oldest
# window's start) and the consumer column counted.
_DISTINCT = {
    "api_endpoint_consumers": (
        ("service", "method", "route"),
        ("service", "method", "route"),
        "consumer_endpoints WHERE last_call >= ?",
        "consumer_id",
    ),
    "api_client_version_consumers": (
        ("service", "client_name", "client_version"),
        ("service", "client_name", "client_version"),
        "consumer_clients WHERE last_call >= ?",
        "consumer_id",
    ),
    # One row per (endpoint, location, parameter, consumer) with its last call: counted like
    # consumer_endpoints, in one pass for the three windows.
    "api_parameter_consumers": (
        ("service", "method", "route", "location", "parameter"),
        ("service", "method", "route", "location", "parameter"),
        "consumer_parameters WHERE last_call >= ?",
        "consumer_id",
    ),
    "api_feedback_consumers": (
        ("service",),
        ("service",),
        "consumer_feedback WHERE last_seen >= ?",
        "consumer_id",
        "last_seen",
    ),
}
# Joins are written `a CROSS JOIN b`: SQLite then keeps that order (the big table scanned, the
# other searched by its primary key) whatever its statistics say. Without statistics for every
# table it planned the adoption join the other way round, 20k x 46k rows, over a minute at 20,000
# consumers. PostgreSQL plans CROSS JOIN ... WHERE as any inner join.
# Feature consumers by the consumer's current plan tier: summed over plans, the feature's consumers.
_ADOPTION = (
    ("f.service", "f.feature", "c.plan_tier"),
    ("service", "feature", "plan_tier"),
    "consumer_features f CROSS JOIN consumers c WHERE c.service = f.service "
    "AND c.consumer_id = f.consumer_id AND f.last_call >= ?",
    "f.consumer_id",
    "f.last_call",
)
_FEATURES = (
    ("service", "feature"),
    ("service", "feature"),
    "consumer_features WHERE last_call >= ?",
    "consumer_id",
)
_DEPRECATED = (
    ("p.service", "p.method", "p.route"),
    ("service", "method", "route"),
    "endpoints e CROSS JOIN consumer_endpoints p WHERE e.deprecated = 1 "
    "AND p.service = e.service AND p.method = e.method AND p.route = e.route "
    "AND p.last_call >= ?",
    "p.consumer_id",
)


def _window_sums(q, spec: tuple, sinces: dict[str, int]) -> dict[tuple, int]:
    """Distinct consumers per key and window, from pair rows in one pass: each (consumer, key) pair
    is one row, so counting the rows whose last call is in a window counts its consumers."""
    columns, _, source, *rest = spec
    last = rest[1] if len(rest) > 1 else "last_call"
    windows = list(sinces)
    sums = ", ".join(f"SUM(CASE WHEN {last} >= ? THEN 1 ELSE 0 END)" for _ in windows)
    groups = ", ".join(str(i + 1) for i in range(len(columns)))
    rows = q(
        f"SELECT {', '.join(columns)}, {sums} FROM {source} GROUP BY {groups}",
        (*(sinces[w] for w in windows), min(sinces.values())),
    )
    n = len(columns)
    return {
        (*row[:n], window): int(count)
        for row in rows
        for window, count in zip(windows, row[n:], strict=True)
        if count
    }


def _distinct(q, spec: tuple, since: int, keep: Keep) -> list[tuple]:
    columns, _, source, who, *_ = spec
    exprs, params = folded_columns(columns, keep)
    groups = ", ".join(str(i + 1) for i in range(len(columns)))
    return q(
        f"SELECT {', '.join(exprs)}, COUNT(DISTINCT {who}) FROM {source} GROUP BY {groups}", (*params, since)
    )


def _per_window(q, spec: tuple, sinces: dict[str, int], keep: Keep | None = None) -> dict[tuple, int]:
    """Distinct consumers per key and window; with `keep`, past a label's kept values the pairs of
    several values merge into `__other__`, where only COUNT(DISTINCT) is exact."""
    if keep is None or all(k is None for k in keep):
        return _window_sums(q, spec, sinces)
    return {
        (*key, window): n for window, since in sinces.items() for *key, n in _distinct(q, spec, since, keep)
    }


def _distinct_family(
    q,
    folder: Folder,
    metric: str,
    spec: tuple,
    sinces: dict[str, int],
    values: dict[tuple, int] | None = None,
) -> tuple[dict[tuple, int], dict[tuple, int], Keep]:
    """(folded values, unfolded values, kept values per label) of one distinct-consumer family;
    past a limit the store counts again with the folded labels, so `__other__` is distinct too."""
    labels = (*spec[1], None)
    values = folder.clean(_per_window(q, spec, sinces) if values is None else values, labels)
    keep = folder.keep(values, labels)
    if all(k is None for k in keep):
        return values, values, keep
    folder.record(metric, values, labels, keep)
    return folder.clean(_per_window(q, spec, sinces, keep[:-1]), labels), values, keep


def build_report(
    store: Store,
    now_ms: int,
    catalog: Catalog | None = None,
    limits: LimitsConfig | None = None,
    oldest_day: int | None = None,
) -> ConsumerReport:
    """Every family from the store, as of one state of it; with `limits`, each label past its limit
    folds into `__other__`; `oldest_day`: the retention cutoff (no cohort from before it)."""
    with store.consistent():
        return _build_report(store, now_ms, catalog, limits, oldest_day)


def _build_report(
    store: Store, now_ms: int, catalog, limits: LimitsConfig | None, oldest_day: int | None = None
) -> ConsumerReport:
    report = ConsumerReport(generated_ms=now_ms)
    today = now_ms // DAY_MS
    q = store.query
    folder = Folder(limits)
    sinces = {window: now_ms - days * DAY_MS for window, days in WINDOWS.items()}

    active = _window_sums(
        q,
        (("service", "plan_tier"), None, "consumers WHERE last_seen >= ?", "consumer_id", "last_seen"),
        sinces,
    )
    # A consumer has one plan tier: these counts add up, so folding them by a sum is exact.
    plan_labels = ("service", "plan_tier", None)
    active = folder.clean(active, plan_labels)
    active_keep = folder.keep(active, plan_labels)
    report.active = folder.fold("api_active_consumers", active, plan_labels, keep=active_keep)

    endpoints: dict[tuple, int] = {}
    families: dict[str, dict[tuple, int]] = {}
    keeps: dict[str, Keep] = {}
    for metric, spec in _DISTINCT.items():
        families[metric], unfolded, keeps[metric] = _distinct_family(q, folder, metric, spec, sinces)
        if metric == "api_endpoint_consumers":
            endpoints = unfolded
    # One pass counts feature consumers per plan tier; a consumer has one plan tier at a time, so
    # the sum over plans is the feature's distinct consumers.
    by_plan = _window_sums(q, _ADOPTION, sinces)
    feature_totals: dict[tuple, int] = defaultdict(int)
    for (service, feature, _, window), n in by_plan.items():
        feature_totals[service, feature, window] += n
    (families["api_feature_consumers"], _, keeps["api_feature_consumers"]) = _distinct_family(
        q, folder, "api_feature_consumers", _FEATURES, sinces, dict(feature_totals)
    )
    report.endpoint_consumers = families["api_endpoint_consumers"]
    report.feature_consumers = families["api_feature_consumers"]
    report.client_versions = families["api_client_version_consumers"]
    report.parameter_consumers = families["api_parameter_consumers"]
    report.feedback_consumers = families["api_feedback_consumers"]

    # Adoption: the feature's consumers among a plan's active ones, folded as those two families are.
    feature_keep = keeps["api_feature_consumers"]
    adoption_keep = [active_keep[0], feature_keep[1], active_keep[1]]
    adopters = folder.clean(
        by_plan
        if all(k is None for k in adoption_keep)
        else _per_window(q, _ADOPTION, sinces, adoption_keep),
        (*_ADOPTION[1], None),
    )
    if any(k is not None for k in adoption_keep):
        folder.record("api_feature_adoption_ratio", adopters, (*_ADOPTION[1], None), [*adoption_keep, None])
    for (service, feature, plan, window), n in adopters.items():
        total = report.active.get((service, plan, window), 0)
        report.feature_adoption[service, feature, plan, window] = n / total if total else 0.0

    # Consumers pruned by retention stay counted (retired_consumers): these counters never go down.
    retired = q(
        "SELECT service, first_plan_tier, ttfs_bucket, consumers, ttfs_seconds FROM retired_consumers"
    )
    new: dict[tuple, int] = defaultdict(int)
    for service, plan, n in q(
        "SELECT service, first_plan_tier, COUNT(*) FROM consumers GROUP BY service, first_plan_tier"
    ):
        new[service, plan] += n
    for service, plan, _, n, _ in retired:
        new[service, plan] += n
    report.new = folder.fold("api_new_consumers", folder.clean(dict(new), plan_labels[:2]), plan_labels[:2])
    # Bucketed in the store with the SQL that tallies retired consumers: one bucket definition,
    # and a row per (service, plan, bucket) rather than per consumer.
    _onboarding(
        report,
        q(
            f"SELECT service, first_plan_tier, {ttfs_bucket_sql()}, COUNT(*), "
            "CAST(SUM(CASE WHEN first_success < first_seen THEN 0 ELSE first_success - first_seen END) "
            "AS DOUBLE PRECISION) / 1000 FROM consumers WHERE first_success IS NOT NULL "
            "GROUP BY 1, 2, 3"
        ),
        retired,
    )
    report.ttfs = folder.fold(
        "api_time_to_first_success_seconds",
        folder.clean(report.ttfs, plan_labels[:2], merge_histograms),
        plan_labels[:2],
        merge_histograms,
        weight=lambda h: h[2],
    )
    _deprecations(report, store, catalog, now_ms, endpoints, folder, sinces)
    _catalog_usage(report, store, catalog, now_ms)
    endpoint_labels = ("service", "method", "route")
    report.sunset = folder.fold(
        "api_endpoint_sunset_timestamp_seconds",
        folder.clean(report.sunset, endpoint_labels, min),
        endpoint_labels,
        min,
    )
    # Catalog-bounded: folding by a sum over-counts a consumer of several folded endpoints.
    report.migrated = folder.fold(
        "api_migrated_consumers",
        folder.clean(report.migrated, (*endpoint_labels, None)),
        (*endpoint_labels, None),
    )
    report.last_called = folder.fold(
        "api_endpoint_last_called_timestamp_seconds",
        folder.clean(report.last_called, endpoint_labels, max),
        endpoint_labels,
        max,
    )
    report.unused = folder.fold(
        "api_unused_endpoints", folder.clean(report.unused, ("service",)), ("service",)
    )
    # Per endpoint: a sum over folded endpoints is exact (each counts its own declared names).
    unused_names = {
        (u.service, u.method, u.route): len(u.names)
        for u in unused_parameters(store, catalog, now_ms, folder.max_length)
    }
    report.unused_parameters = folder.fold(
        "api_unused_parameters", folder.clean(unused_names, endpoint_labels), endpoint_labels
    )
    _cohorts(report, store, today, folder, oldest_day)
    _at_risk(report, store, today)
    report.at_risk = folder.fold(
        "api_consumers_at_risk", folder.clean(report.at_risk, plan_labels[:2]), plan_labels[:2]
    )
    _experiments(report, store, folder)
    report.folded = folder.folded
    _releases(report, store, limits)
    return report


def _experiments(report: ConsumerReport, store: Store, folder: Folder) -> None:
    """api_experiment_consumers and api_experiment_contaminated_consumers (0 for an experiment
    without contamination): a consumer has one stored variant, so both fold by a sum, exactly."""
    labels = ("service", "experiment", "variant")
    assigned: dict[tuple, int] = {}
    contaminated: dict[tuple, int] = defaultdict(int)
    for service, experiment, variant, n, other in store.query(
        "SELECT service, experiment, variant, COUNT(*), "
        "SUM(CASE WHEN other_variant IS NULL THEN 0 ELSE 1 END) FROM experiment_consumers "
        "GROUP BY service, experiment, variant"
    ):
        assigned[service, experiment, variant] = int(n)
        contaminated[service, experiment] += int(other)
    assigned = folder.clean(assigned, labels)
    keep = folder.keep(assigned, labels)
    report.experiment_consumers = folder.fold("api_experiment_consumers", assigned, labels, keep=keep)
    report.experiment_contaminated = folder.fold(
        "api_experiment_contaminated_consumers",
        folder.clean(dict(contaminated), labels[:2]),
        labels[:2],
        keep=keep[:2],
    )


def _releases(report: ConsumerReport, store: Store, limits: LimitsConfig | None) -> None:
    """The newest `limits.max_releases` releases of each service by first sight, ranked 0 (newest)
    up; services past the service label limit (those with the fewest requests) are dropped and
    counted in report.folded, as the other families' folded values are."""
    keep = limits.max_releases if limits is not None else 5
    max_services = limits.label_limit("service") if limits is not None else None
    # Ties on first_seen (one flush, same ms): the greater version string is the newer, so the
    # ranks are the same on every replica and every refresh.
    rows = store.query(
        "SELECT service, version, first_seen, requests FROM releases "
        "ORDER BY service, first_seen DESC, version DESC"
    )
    per_service: dict[str, list[tuple[str, int]]] = defaultdict(list)
    traffic: dict[str, float] = defaultdict(float)
    for service, version, first_seen, requests in rows:
        per_service[service].append((version, first_seen))
        traffic[service] += requests
    services = sorted(per_service, key=lambda s: (-traffic[s], s))
    if max_services is not None and len(services) > max_services:
        dropped = services[max_services:]
        series = sum(min(keep, len(per_service[s])) for s in dropped)
        report.folded["api_release_rank", "service"] = (len(dropped), series)
        services = services[:max_services]
    for service in services:
        for rank, (version, first_seen) in enumerate(per_service[service][:keep]):
            report.release_first_seen[service, version] = first_seen / 1000
            report.release_rank[service, version] = rank


def _onboarding(report: ConsumerReport, *tallies: Iterable[tuple]) -> None:
    """The onboarding histograms from (service, plan, bucket, consumers, seconds) tallies: the
    stored consumers' and the retired ones'."""
    n = len(TTFS_BUCKETS) + 1
    for service, plan, bucket, consumers, seconds in itertools.chain(*tallies):
        if bucket < 0:
            continue  # never succeeded: not in the histogram
        counts, total, count = report.ttfs.get((service, plan), ([0] * n, 0.0, 0))
        counts[min(bucket, n - 1)] += consumers
        report.ttfs[service, plan] = (counts, total + seconds, count + consumers)


def _deprecations(
    report: ConsumerReport,
    store: Store,
    catalog,
    now_ms: int,
    endpoint_consumers: dict[tuple, int],
    folder: Folder,
    sinces: dict[str, int],
) -> None:
    """Consumers of deprecated endpoints, sunsets and migrations; `endpoint_consumers` unfolded."""
    deprecated: dict[tuple, int] = {}
    for ep in deprecated_endpoints(store, catalog):
        key = (ep.service, ep.method, ep.route)
        if ep.sunset is not None:
            sunset = dt.datetime.combine(ep.sunset, dt.time(), dt.timezone.utc)
            report.sunset[key] = sunset.timestamp()
        for window, days in WINDOWS.items():
            deprecated[key + (window,)] = endpoint_consumers.get(key + (window,), 0)
            if ep.replacement is None:
                continue
            # The first day in the window on the deprecated endpoint, against the last day on
            # the replacement (its pair row): a range of one endpoint's daily rows, not a scan.
            ((n,),) = store.query(
                "SELECT COUNT(*) FROM (SELECT consumer_id, MIN(day) AS since FROM endpoint_days "
                "WHERE service = ? AND method = ? AND route = ? AND day >= ? AND last_call >= ? "
                "GROUP BY consumer_id) dep CROSS JOIN consumer_endpoints r WHERE r.service = ? "
                "AND r.method = ? AND r.route = ? AND r.consumer_id = dep.consumer_id "
                "AND r.last_call >= CAST(dep.since AS BIGINT) * 86400000",
                (
                    *key,
                    (now_ms - days * DAY_MS) // DAY_MS,
                    now_ms - days * DAY_MS,
                    ep.service,
                    *ep.replacement,
                ),
            )
            report.migrated[key + (window,)] = n
    labels = (*_DEPRECATED[1], None)
    deprecated = folder.clean(deprecated, labels)
    keep = folder.keep(deprecated, labels)
    if all(k is None for k in keep):
        report.deprecated_consumers = deprecated
        return
    # Kept endpoints keep their exact counts; `__other__` counts the distinct consumers of the
    # folded ones as flagged in the endpoints table (spans, or the catalog through the deriver).
    folded = folder.fold("api_deprecated_endpoint_consumers", deprecated, labels, keep=keep)
    others = folder.clean(_per_window(store.query, _DEPRECATED, sinces, keep[:-1]), labels)
    report.deprecated_consumers = {
        key: (others.get(key, 0) if OVERFLOW_VALUE in key[:-1] else n) for key, n in folded.items()
    }


def _catalog_usage(report: ConsumerReport, store: Store, catalog: Catalog | None, now_ms: int) -> None:
    if catalog is None:
        return
    # Observed routes by their slots: `/v1/users/:userId/orders` is the catalog's
    # `/v1/users/{user_id}/orders`. Two spellings of one route (two frameworks): the latest call.
    last_seen, methods_of = _observed(store)
    cutoff = now_ms - UNUSED_AFTER_DAYS * DAY_MS
    for service in catalog.services:
        unused = 0
        for ep in service.endpoints:
            key = route_key(ep.route)
            if key is None:  # an unreadable route (a hand-built catalog's) is never called
                unused += 1
                continue
            methods = [ep.method] if ep.method != "*" else sorted(methods_of.get((service.name, key), ()))
            seen = [
                (m, *last_seen[service.name, m, key]) for m in methods if (service.name, m, key) in last_seen
            ]
            for method, route, at in seen:
                report.last_called[service.name, method, route] = at / 1000
            if not seen or max(at for _, _, at in seen) < cutoff:
                unused += 1
        report.unused[service.name,] = unused


def _observed(
    store: Store,
) -> tuple[dict[tuple[str, str, str], tuple[str, int]], dict[tuple[str, str], set[str]]]:
    """Observed endpoints by catalog key: (service, method, key) → (its latest spelling, last call),
    and (service, key) → its methods, for `*` entries."""
    last_seen: dict[tuple[str, str, str], tuple[str, int]] = {}
    methods_of: dict[tuple[str, str], set[str]] = {}
    for s, m, r, t in store.query("SELECT service, method, route, last_seen FROM endpoints"):
        key = catalog_key(r)
        if key is not None and ((s, m, key) not in last_seen or last_seen[s, m, key][1] < t):
            last_seen[s, m, key] = (r, t)
            methods_of.setdefault((s, key), set()).add(m)
    return last_seen, methods_of


@dataclass(frozen=True)
class UnusedParameters:
    """A catalog endpoint called in the last 30 days and the declared names nobody sent in them."""

    service: str
    method: str
    route: str  # as observed (its latest spelling)
    last_call_ms: int
    declared: int
    names: tuple[tuple[str, str], ...]  # (location, name), in the catalog's order


def unused_parameters(
    store: Store,
    catalog: Catalog | None,
    now_ms: int,
    max_length: int = 128,
    service: str | None = None,
) -> list[UnusedParameters]:
    """Per catalog endpoint that declares parameters and was called in the last 30 days: the
    declared names no request sent in those days (with or without a consumer).

    An endpoint not called at all in 30 days is left out: every name it declares is unused by
    definition, and `api_unused_endpoints` counts the endpoint. A declared object field (`address`)
    counts as sent when a field under it was (`address.city`), whatever depth the
    instrumentation records."""
    if catalog is None:
        return []
    cutoff = now_ms - UNUSED_AFTER_DAYS * DAY_MS
    wanted = [
        svc
        for svc in catalog.services
        if (service is None or svc.name == service)
        and any(ep.query_parameters or ep.body_fields for ep in svc.endpoints)
    ]
    if not wanted:
        return []
    last_seen, methods_of = _observed(store)
    # Names sent in the window per (service, method, key, location), with every dotted prefix.
    sent: dict[tuple[str, str, str, str], set[str]] = {}
    for s, m, r, location, name in store.query(
        "SELECT service, method, route, location, parameter FROM parameters WHERE last_seen >= ?", (cutoff,)
    ):
        key = catalog_key(r)
        if key is None:
            continue
        names = sent.setdefault((s, m, key, location), set())
        names.add(name)
        while "." in name:
            name = name.rsplit(".", 1)[0]
            names.add(name)
    out: list[UnusedParameters] = []
    for svc in wanted:
        for ep in svc.endpoints:
            if not (ep.query_parameters or ep.body_fields):
                continue
            key = route_key(ep.route)
            if key is None:
                continue
            methods = [ep.method] if ep.method != "*" else sorted(methods_of.get((svc.name, key), ()))
            for method in methods:
                seen = last_seen.get((svc.name, method, key))
                if seen is None or seen[1] < cutoff:
                    continue
                unused = tuple(
                    (location, name)
                    for location in ("query", "body")
                    for name in ep.declared(location)
                    if sanitize_label_value(name, max_length)
                    not in sent.get((svc.name, method, key, location), ())
                )
                declared = len(ep.query_parameters) + len(ep.body_fields)
                out.append(UnusedParameters(svc.name, method, seen[0], seen[1], declared, unused))
    return sorted(out, key=lambda u: (u.service, u.route, u.method))


_COHORT = "(c.first_seen / 86400000 + 3) / 7"


def _cohorts(
    report: ConsumerReport, store: Store, today: int, folder: Folder, oldest_day: int | None = None
) -> None:
    this_week = week_of(today)
    first_week = this_week - COHORT_WEEKS + 1
    if oldest_day is not None:
        # Retention (35 days at least) deletes the consumers of a cohort who left before the
        # cutoff: the survivors alone would show an older cohort's retention near 100%. Only the
        # weeks that start on or after the cutoff still hold every member.
        first_week = max(first_week, (oldest_day + 3 + 6) // 7)
    since = (first_week * 7 - 3) * DAY_MS
    # Counted in the store from the weekly rows: a consumer is one (service, consumer) pair, so the
    # counts of services folded into `__other__` add up exactly.
    sizes: dict[tuple, int] = {
        (service, int(cohort)): n
        for service, cohort, n in store.query(
            f"SELECT c.service, {_COHORT}, COUNT(*) FROM consumers c WHERE c.first_seen >= ? GROUP BY 1, 2",
            (since,),
        )
    }
    active = {
        (service, int(cohort), int(week) - int(cohort)): n
        for service, cohort, week, n in store.query(
            f"SELECT c.service, {_COHORT}, w.week, COUNT(*) FROM consumers c "
            "CROSS JOIN consumer_weeks w WHERE w.service = c.service "
            "AND w.consumer_id = c.consumer_id AND c.first_seen >= ? "
            f"AND w.week >= {_COHORT} AND w.week <= ? GROUP BY 1, 2, 3",
            (since, this_week),
        )
    }
    per_service: dict[tuple, int] = defaultdict(int)
    for (service, _), n in sizes.items():
        per_service[service,] += n
    per_service = folder.clean(dict(per_service), ("service",))
    [keep] = folder.keep(per_service, ("service",))
    if keep is not None:
        folder.record("api_cohort_retention_ratio", per_service, ("service",), [keep])
    n = folder.max_length
    labels: dict[str, str] = {}

    def label(service: str) -> str:
        known = labels.get(service)
        if known is None:
            known = sanitize_label_value(service, n)
            known = labels[service] = known if keep is None or known in keep else OVERFLOW_VALUE
        return known

    folded_sizes: dict[tuple, int] = defaultdict(int)
    for (service, cohort), size in sizes.items():
        folded_sizes[label(service), cohort] += size
    folded_active: dict[tuple, int] = defaultdict(int)
    for (service, cohort, since_weeks), count in active.items():
        folded_active[label(service), cohort, since_weeks] += count
    for (service, cohort), size in folded_sizes.items():
        week_label = week_start(cohort).isoformat()
        for weeks in range(this_week - cohort + 1):
            report.cohorts[service, week_label, str(weeks)] = (
                folded_active.get((service, cohort, weeks), 0) / size
            )


def consumer_trends(store: Store, today: int) -> list[tuple]:
    """Per consumer: (service, consumer, plan, client, version, last_seen, last 7 days' calls,
    weekly average of the 4 weeks before)."""
    recent_from = today - 6
    # Summed per consumer first (in key order, no sort), then joined: one lookup per consumer.
    rows = store.query(
        "SELECT c.service, c.consumer_id, c.plan_tier, c.client_name, c.client_version, "
        "c.last_seen, d.recent_calls, d.earlier_calls FROM (SELECT service, consumer_id, "
        "SUM(CASE WHEN day >= ? THEN calls ELSE 0 END) AS recent_calls, "
        "SUM(CASE WHEN day < ? THEN calls ELSE 0 END) AS earlier_calls FROM consumer_days "
        "WHERE day >= ? AND day <= ? GROUP BY service, consumer_id) d CROSS JOIN consumers c "
        "WHERE c.service = d.service AND c.consumer_id = d.consumer_id",
        (recent_from, recent_from, today - 34, today),
    )
    return [(*r[:7], r[7] / 4) for r in rows]


def is_at_risk(recent: float, weekly_average: float) -> bool:
    """Last 7 days below half the previous 4 weeks' weekly average."""
    return weekly_average > 0 and recent < 0.5 * weekly_average


def _at_risk(report: ConsumerReport, store: Store, today: int) -> None:
    # is_at_risk() in SQL (recent < 0.5 * previous / 4, exact in binary floating point): only the
    # consumers at risk are joined for their plan tier.
    recent_from = today - 6
    for service, plan, n in store.query(
        "SELECT c.service, c.plan_tier, COUNT(*) FROM (SELECT service, consumer_id, "
        "SUM(CASE WHEN day >= ? THEN calls ELSE 0 END) AS recent_calls, "
        "SUM(CASE WHEN day < ? THEN calls ELSE 0 END) AS earlier_calls FROM consumer_days "
        "WHERE day >= ? AND day <= ? GROUP BY service, consumer_id) d CROSS JOIN consumers c "
        "WHERE c.service = d.service AND c.consumer_id = d.consumer_id "
        "AND d.earlier_calls > 0 AND d.recent_calls < 0.5 * (d.earlier_calls / 4) "
        "GROUP BY c.service, c.plan_tier",
        (recent_from, recent_from, today - 34, today),
    ):
        report.at_risk[service, plan] = n
    # 0 for every plan tier with a consumer active in those five weeks.
    for service, plan in store.query(
        "SELECT DISTINCT c.service, c.plan_tier FROM consumers c WHERE c.last_seen >= ? AND "
        "EXISTS (SELECT 1 FROM consumer_days d WHERE d.service = c.service "
        "AND d.consumer_id = c.consumer_id AND d.day >= ? AND d.day <= ?)",
        ((today - 34) * DAY_MS, today - 34, today),
    ):
        report.at_risk.setdefault((service, plan), 0)


def deprecated_callers(store: Store, service: str, method: str, route: str, since_ms: int) -> list[tuple]:
    """Consumers still calling an endpoint since `since_ms`, busiest first:
    (consumer, plan, client, version, last call ms, calls)."""
    return store.query(
        "SELECT a.consumer_id, c.plan_tier, c.client_name, c.client_version, "
        "MAX(a.last_call), SUM(a.calls) FROM endpoint_days a CROSS JOIN consumers c "
        "WHERE c.service = a.service AND c.consumer_id = a.consumer_id "
        "AND a.service = ? AND a.method = ? AND a.route = ? AND a.day >= ? AND a.last_call >= ? "
        "GROUP BY a.consumer_id, c.plan_tier, c.client_name, c.client_version "
        "ORDER BY SUM(a.calls) DESC, a.consumer_id",
        (service, method, route, since_ms // DAY_MS, since_ms),
    )
