"""The incremental state model against an independent computation from the raw requests.

Hypothesis generates requests (consumers, endpoints, features, client versions, plan changes,
failures, days over 14 weeks), feeds them through the real write path (ConsumerActivity ->
Store.write) in random splits: one flush or several, one connection or two replicas taking turns,
and compares every family of build_report() with a pure-Python computation from the requests
themselves (no SQL, no pair tables), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
from apiusage.processor.config import PostgresState, SqliteState, StateConfig
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.state.activity import ConsumerActivity
from apiusage.processor.state.report import build_report
from apiusage.processor.state.schema import TTFS_BUCKETS
from apiusage.processor.state.store import open_store
from apiusage.processor.telemetry import PipelineStats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.examples import examples
from tests.support.postgres import postgres_server

DAY_MS = 86_400_000
WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
SERVICES = ("orders-api", "billing")
ENDPOINTS = (
    ("GET", "/v1/orders"),
    ("GET", "/v2/orders"),
    ("POST", "/v1/orders"),
    ("DELETE", "/v1/orders/{id}"),
    ("DELETE", "/v2/orders/{id}"),
)
# Catalog: two deprecated endpoints with a replacement each, one deprecated without, one never called.
CATALOG_DEPRECATED = {
    ("GET", "/v1/orders"): ("GET", "/v2/orders"),
    ("DELETE", "/v1/orders/{id}"): ("DELETE", "/v2/orders/{id}"),
}
CATALOG_UNCALLED = ("PUT", "/v1/never")
FEATURES = (None, "", "export", "search")
CLIENTS = (("sdk-py", "1.0"), ("sdk-py", "2.0"), ("sdk-js", "1.0"))
PLANS = ("free", "pro")
STATUSES = ("200", "201", "302", "404", "500", "unknown")
# Parameter and body field names a request carries (schema version 2), and what the catalog's
# POST /v1/orders declares: `dry_run` and `note` are never sent, `items` is sent as itself and as
# the prefix of `items.sku`.
QUERIES = (None, (), ("limit",), ("cursor", "limit"))
BODIES = (None, ("items",), ("items.sku",), ("items", "note.text"))
DECLARED = {"query": ("limit", "dry_run"), "body": ("items", "note", "customer")}
# The ConsumerReport fields the model computes independently and compares, all of them.
REPORT_FIELDS = (
    "active",
    "new",
    "ttfs",
    "endpoint_consumers",
    "feature_consumers",
    "client_versions",
    "feature_adoption",
    "deprecated_consumers",
    "migrated",
    "last_called",
    "unused",
    "cohorts",
    "at_risk",
    "parameter_consumers",
    "unused_parameters",
)


def catalog(services=SERVICES) -> SimpleNamespace:
    """The slice of the catalog build_report reads: services and their endpoints."""

    def endpoint(method: str, route: str, deprecated: bool, replacement: str | None, declared=None):
        declared = declared or {}
        return SimpleNamespace(
            method=method,
            route=route,
            deprecated=deprecated,
            replacement=replacement,
            sunset=None,
            query_parameters=declared.get("query", ()),
            body_fields=declared.get("body", ()),
            declared=lambda location: declared.get(location, ()),
        )

    return SimpleNamespace(
        services=[
            SimpleNamespace(
                name=s,
                endpoints=[
                    *(endpoint(m, r, True, f"{rm} {rr}") for (m, r), (rm, rr) in CATALOG_DEPRECATED.items()),
                    endpoint("POST", "/v1/orders", False, None, DECLARED),
                    endpoint(*CATALOG_UNCALLED, False, None),
                ],
            )
            for s in services
        ]
    )


# One request: (service, consumer, at offset ms before now, endpoint, feature, client, plan, status,
# span-deprecated flag).  Offsets are unique per test case so "the newest request" is one request.
request_strategy = st.tuples(
    st.sampled_from(SERVICES),
    st.sampled_from([f"c{i}" for i in range(8)]),
    # Days and time of day apart: Hypothesis favours small integers, and 98 days in ms would
    # put nearly every request in the last second.
    st.builds(lambda d, ms: d * DAY_MS + ms, st.integers(0, 98), st.integers(0, DAY_MS - 1)),
    st.sampled_from(ENDPOINTS),
    st.sampled_from(FEATURES),
    st.sampled_from(CLIENTS),
    st.sampled_from(PLANS),
    st.sampled_from(STATUSES),
    st.booleans(),
    st.sampled_from(QUERIES),
    st.sampled_from(BODIES),
)


def to_requests(raw: list[tuple], now_ms: int) -> list[ApiRequest]:
    seen: set[int] = set()
    out = []
    for service, consumer, offset, (method, route), feature, (cn, cv), plan, status, dep, query, body in raw:
        while offset in seen:  # unique times: ties between requests have no defined winner
            offset += 1
        seen.add(offset)
        at = now_ms - offset
        out.append(
            ApiRequest(
                service,
                method,
                route,
                status,
                plan,
                "true" if dep else "false",
                cn,
                cv,
                None,
                feature,
                consumer,
                0.01,
                1.0,
                at * 1_000_000,
                b"t",
                b"s",
                query_parameters=query,
                body_fields=body,
            )
        )
    return sorted(out, key=lambda r: r.end_time_ns)


def expected(
    requests: list[ApiRequest], now_ms: int, oldest_day: int | None = None, first_plans: dict | None = None
) -> dict[str, dict]:
    """Every family, from the requests alone; `oldest_day`: after retention at that cutoff;
    `first_plans`: the plan of each consumer's first request in the flush that first stored it
    (docs/state.md: a late older span does not move a consumer between plan labels)."""
    today = now_ms // DAY_MS
    cutoff_ms = -1 if oldest_day is None else oldest_day * DAY_MS
    sinces = {w: now_ms - d * DAY_MS for w, d in WINDOWS.items()}
    by_consumer: dict[tuple, list[ApiRequest]] = defaultdict(list)
    for r in requests:
        by_consumer[r.service, r.consumer_id].append(r)
    info = {}
    for key, rs in by_consumer.items():
        first = min(rs, key=lambda r: r.end_time_ns)
        last = max(rs, key=lambda r: r.end_time_ns)
        ok = [r.end_time_ns // 1_000_000 for r in rs if r.status_code[0] == "2"]
        first_plan = first.plan_tier if first_plans is None else first_plans[key]
        info[key] = SimpleNamespace(
            first=first.end_time_ns // 1_000_000,
            first_plan=first_plan,
            last=last.end_time_ns // 1_000_000,
            plan=last.plan_tier,
            success=min(ok) if ok else None,
        )
    out: dict[str, dict] = {name: {} for name in REPORT_FIELDS}

    def distinct(key_of) -> dict[tuple, int]:
        sets: dict[tuple, set] = defaultdict(set)
        for r in requests:
            key = key_of(r)
            if key is None:
                continue
            for w, since in sinces.items():
                if r.end_time_ns // 1_000_000 >= since:
                    sets[(*key, w)].add(r.consumer_id)
        return {k: len(v) for k, v in sets.items()}

    for (service, _), c in info.items():
        for w, since in sinces.items():
            if c.last >= since:
                out["active"][service, c.plan, w] = out["active"].get((service, c.plan, w), 0) + 1
        out["new"][service, c.first_plan] = out["new"].get((service, c.first_plan), 0) + 1
        if c.success is not None:
            n = len(TTFS_BUCKETS) + 1
            counts, total, count = out["ttfs"].get((service, c.first_plan), ([0] * n, 0.0, 0))
            seconds = (c.success - c.first) / 1000
            counts[next((i for i, b in enumerate(TTFS_BUCKETS) if seconds <= b), n - 1)] += 1
            out["ttfs"][service, c.first_plan] = (counts, total + seconds, count + 1)
    out["endpoint_consumers"] = distinct(lambda r: (r.service, r.method, r.route))
    out["feature_consumers"] = distinct(lambda r: (r.service, r.feature) if r.feature else None)
    out["client_versions"] = distinct(lambda r: (r.service, r.client_name, r.client_version))
    adopters = distinct(
        lambda r: (r.service, r.feature, info[r.service, r.consumer_id].plan) if r.feature else None
    )
    out["feature_adoption"] = {
        (s, f, p, w): n / out["active"][s, p, w] for (s, f, p, w), n in adopters.items()
    }

    # Deprecated: the catalog's, and those whose newest span said so.
    newest: dict[tuple, ApiRequest] = {}
    for r in requests:
        newest[r.service, r.method, r.route] = r  # sorted by time: the last one wins
    deprecated = {(s, *ep): rep for s in SERVICES for ep, rep in CATALOG_DEPRECATED.items()}
    for key, r in newest.items():
        if r.deprecated == "true" and r.end_time_ns // 1_000_000 >= cutoff_ms:  # else pruned
            deprecated.setdefault(key, None)
    for key, replacement in deprecated.items():
        for w, since in sinces.items():
            out["deprecated_consumers"][(*key, w)] = out["endpoint_consumers"].get((*key, w), 0)
            if replacement is None:
                continue
            migrated = 0
            for consumer in {r.consumer_id for r in requests if r.service == key[0]}:
                on_old = [
                    r.end_time_ns // 1_000_000 // DAY_MS
                    for r in requests
                    if (r.service, r.method, r.route) == key
                    and r.consumer_id == consumer
                    and r.end_time_ns // 1_000_000 >= since
                ]
                if on_old and any(
                    (r.service, r.consumer_id, r.method, r.route) == (key[0], consumer, *replacement)
                    and r.end_time_ns // 1_000_000 // DAY_MS >= min(on_old)
                    for r in requests
                ):
                    migrated += 1
            out["migrated"][(*key, w)] = migrated
    for service in SERVICES:
        unused = 0
        for method, route in [*CATALOG_DEPRECATED, ("POST", "/v1/orders"), CATALOG_UNCALLED]:
            r = newest.get((service, method, route))
            if r is not None and r.end_time_ns // 1_000_000 >= cutoff_ms:  # else pruned
                out["last_called"][service, method, route] = (r.end_time_ns // 1_000_000) / 1000
            if r is None or r.end_time_ns // 1_000_000 < now_ms - 30 * DAY_MS:
                unused += 1
        out["unused"][service,] = unused

    def names(r: ApiRequest) -> list[tuple[str, str]]:
        return [("query", n) for n in r.query_parameters or ()] + [("body", n) for n in r.body_fields or ()]

    sets: dict[tuple, set] = defaultdict(set)
    for r in requests:
        for location, name in names(r):
            for w, since in sinces.items():
                if r.end_time_ns // 1_000_000 >= since:
                    sets[r.service, r.method, r.route, location, name, w].add(r.consumer_id)
    out["parameter_consumers"] = {k: len(v) for k, v in sets.items()}
    month = now_ms - 30 * DAY_MS
    for service in SERVICES:
        recent = [
            r
            for r in requests
            if (r.service, r.method, r.route) == (service, "POST", "/v1/orders")
            and r.end_time_ns // 1_000_000 >= month
        ]
        if not recent:
            continue  # not called in 30 days: counted by api_unused_endpoints, not here
        sent = {(loc, n) for r in recent for loc, n in names(r)}
        sent |= {(loc, n.rsplit(".", 1)[0]) for loc, n in sent if "." in n}
        out["unused_parameters"][service, "POST", "/v1/orders"] = sum(
            1 for loc, names_ in DECLARED.items() for n in names_ if (loc, n) not in sent
        )

    this_week = (today + 3) // 7
    first_day = (this_week - 11) * 7 - 3
    if oldest_day is not None:  # cohorts from before the cutoff lost their leavers: not published
        first_day = max(first_day, ((oldest_day + 9) // 7) * 7 - 3)
    sizes: dict[tuple, int] = defaultdict(int)
    cohort_of = {}
    for (service, consumer), c in info.items():
        if c.first >= first_day * DAY_MS:
            cohort_of[service, consumer] = (c.first // DAY_MS + 3) // 7
            sizes[service, cohort_of[service, consumer]] += 1
    weeks = {(r.service, r.consumer_id, (r.end_time_ns // 1_000_000 // DAY_MS + 3) // 7) for r in requests}
    for (service, cohort), size in sizes.items():
        start = (dt.date(1970, 1, 1) + dt.timedelta(days=cohort * 7 - 3)).isoformat()
        for k in range(this_week - cohort + 1):
            n = sum(
                1
                for (s, c, week) in weeks
                if s == service and cohort_of.get((s, c)) == cohort and week == cohort + k
            )
            out["cohorts"][service, start, str(k)] = n / size

    for (service, consumer), c in info.items():
        days = [r.end_time_ns // 1_000_000 // DAY_MS for r in by_consumer[service, consumer]]
        if not any(today - 34 <= d <= today for d in days):
            continue
        recent = sum(1.0 for d in days if today - 6 <= d <= today)
        earlier = sum(1.0 for d in days if today - 34 <= d < today - 6)
        key = (service, c.plan)
        out["at_risk"][key] = out["at_risk"].get(key, 0) + (earlier > 0 and recent < 0.5 * (earlier / 4))
    return out


def actual(report) -> dict[str, dict]:
    return {name: getattr(report, name) for name in REPORT_FIELDS}


def approx_ttfs(family: dict) -> dict:
    # The histogram sum is a float summed in another order in SQL (retired) and here.
    return {k: (counts, round(total, 6), count) for k, (counts, total, count) in family.items()}


def write_through(
    stores: list, requests: list[ApiRequest], cuts: list[int], now_ms: int, late: bool = False
) -> dict:
    """The requests in flushes cut at `cuts`, each written by the next store in turn; `late`:
    the newest flush first (late exports, a replica behind). Returns each consumer's first plan
    as the store defines it (see expected())."""
    bounds = [0, *sorted(set(cuts)), len(requests)]
    chunks = [requests[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    first_plans: dict = {}
    for i, chunk in enumerate(reversed(chunks) if late else chunks):
        for r in chunk:  # sorted by time: the first one of a consumer is its earliest here
            first_plans.setdefault((r.service, r.consumer_id), r.plan_tier)
        activity = ConsumerActivity(retention_days=400, stats=PipelineStats())
        activity.consume(chunk)
        stores[i % len(stores)].write(activity.drain())
    return first_plans


def check(
    stores: list, requests: list[ApiRequest], now_ms: int, prune_days: int | None, first_plans: dict
) -> None:
    """build_report against the requests; with `prune_days`, after the last replica's retention."""
    oldest_day = None
    if prune_days is not None:
        oldest_day = now_ms // DAY_MS - prune_days
        stores[-1].prune(oldest_day)
    want = expected(requests, now_ms, oldest_day, first_plans)
    got = actual(build_report(stores[0], now_ms, catalog(), oldest_day=oldest_day))
    want["ttfs"], got["ttfs"] = approx_ttfs(want["ttfs"]), approx_ttfs(got["ttfs"])
    for name in want:
        assert got[name] == want[name], name


case = given(
    raw=st.lists(request_strategy, min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60), max_size=4),
    replicas=st.sampled_from([1, 2]),
    prune_days=st.one_of(st.none(), st.integers(35, 100)),
    late=st.booleans(),
)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@case
def test_sqlite_report_equals_the_requests(raw, cuts, replicas, prune_days, late) -> None:
    now_ms = int(time.time() * 1000)
    requests = to_requests(raw, now_ms)
    with tempfile.TemporaryDirectory() as folder:
        config = StateConfig(sqlite=SqliteState(path=str(Path(folder) / "state.db")))
        stores = [open_store(config) for _ in range(replicas)]
        try:
            plans = write_through(stores, requests, [c % len(requests) for c in cuts], now_ms, late)
            check(stores, requests, now_ms, prune_days, plans)
        finally:
            for store in stores:
                store.close()


@pytest.fixture(scope="module")
def pg_dsn():
    with postgres_server() as pg:
        yield pg.dsn


_TABLES = (
    "consumers",
    "consumer_endpoints",
    "consumer_features",
    "consumer_clients",
    "consumer_days",
    "consumer_weeks",
    "endpoint_days",
    "retired_consumers",
    "endpoints",
    "consumer_parameters",
    "parameters",
    "consumer_feedback",
)


@pytest.mark.live
@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@case
def test_postgres_report_equals_the_requests(pg_dsn, raw, cuts, replicas, prune_days, late) -> None:
    now_ms = int(time.time() * 1000)
    requests = to_requests(raw, now_ms)
    stores = [open_store(StateConfig(postgres=PostgresState(dsn=pg_dsn))) for _ in range(replicas)]
    try:
        stores[0].execute(f"TRUNCATE {', '.join(_TABLES)}")
        plans = write_through(stores, requests, [c % len(requests) for c in cuts], now_ms, late)
        check(stores, requests, now_ms, prune_days, plans)
    finally:
        for store in stores:
            with contextlib.suppress(Exception):
                store.close()
