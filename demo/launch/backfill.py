"""Weeks of simulated history for the demo, sent to the processor as OTLP spans with past timestamps.

The consumers are the demo's own (one per API key of ``plans.yaml``, with the plan
tier, client SDK and version the live traffic generator gives them for the same
seed), plus former consumers who have since left. Over the history:

* consumers join week after week (weekly cohorts), new ones fail a few times
  (validation errors) before their first success, some never succeed and give up;
* consumers on old SDKs call the v1 routes, including the deprecated endpoints, and
  several upgrade along the way and move to the v2 replacements;
* some consumers churn, and a few of today's consumers nearly stop calling in the last
  week (consumers at risk);
* weekends are quieter, a couple of incidents produce bursts of 5xx answers.

Consumers who join during the live run (the generator's late joiners) are left out,
so they are new when they arrive. Volumes match the live rate: one day of a consumer's
history is a handful of spans whose sampling adjusted count (W3C tracestate
``ot=th:``) makes them stand for that day's calls, so the state store sees
believable daily calls without millions of spans being sent.

Spans carry the attributes the apiusage instrumentation sets, with the consumer id
pseudonymized with the same key as the demo service, so history and live traffic
belong to the same consumers. The service upgraded its instrumentation four weeks ago
(``UPGRADED_DAYS_AGO``): older spans are schema version 1; newer ones are version 2 and
also carry what each SDK sends (query parameter and body field names), body sizes, the
validation errors of 422s (the JavaScript SDK's ``body.lines.*.quantity``, the CLI's
missing ``body.since``), ``error.type`` of 5xx, the consumer's country
(``traffic.region_of``) and, on the resource, ``cloud.region``. Export downloads grow
by ``EXPORT_WEEKLY_GROWTH`` a week up to today's size (``promhistory`` gives Prometheus
these weeks too, so the week-over-week alerts have a past to compare with). Developer feedback events (OTLP
log records, ``apiusage.feedback``) follow the spans, a few per consumer and week.

The history's resource says ``service.version`` 1.4.2, the release the live service starts
with, and carries no feature-flag evaluations. An older release could not be told anyway: the
processor dates a release's first sight no earlier than 15 minutes before it received it
(``RELEASE_PAST_SKEW_MS``), so replayed weeks cannot invent past deploys; with the one release
the Releases dashboard and ``ApiReleaseRegression`` have weeks of 1.4.2 to compare 1.5.0 with.
The experiment starts with the live traffic (its ``start`` is the day of the run).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from .. import CATALOG, RELEASES, SERVER_REGION, SERVICE_NAME
from ..app import EXPORT_BASE_BYTES
from ..traffic import SDKS, TOPICS, opinion_of, population, region_of

__all__ = ["Backfill", "BackfillError", "BackfillResult", "Feedback", "feedback", "plan"]

DAY = 86_400
WEEK = 7 * DAY
BATCH = 2_000
FORMER = 14  # consumers who are gone by now
_TAIL = 0.1  # share of a day's calls to an endpoint taken by the slow tail span
UPGRADED_DAYS_AGO = 28  # spans before this are schema version 1, without the design attributes
EXPORT_WEEKLY_GROWTH = 1.6  # export downloads, week over week: past ApiResponseSizeGrowing's 1.5
FEEDBACK_EVERY = 3 * DAY  # mean time between two feedback posts of an active consumer


class BackfillError(Exception):
    """The processor did not accept the history; the message says what it answered."""


@dataclasses.dataclass
class Member:
    key: str
    tier: str
    client: str | None
    old_version: str  # client version while on the v1 routes
    new_version: str  # after the upgrade (same as old when there is none)
    api: str  # "v1" or "v2": the routes called at the end of the history
    joined: float  # unix time of the first call
    activity: float
    onboarding: float | None  # seconds from the first call to the first success; None: never
    migrated: float | None = None  # when a consumer moved from v1 to v2
    churned: float | None = None  # no calls after this
    at_risk: bool = False  # calls fell sharply in the last 7 days

    def api_at(self, t: float) -> str:
        if self.migrated is not None:
            return "v1" if t < self.migrated else "v2"
        return self.api

    def version_at(self, t: float) -> str:
        return self.old_version if self.api_at(t) == "v1" else self.new_version


@dataclasses.dataclass(frozen=True)
class Endpoint:
    method: str
    route: str
    weight: float
    latency: float  # seconds, typical
    status: int  # on success
    feature: str | None = None
    deprecated: bool = False


# The request mix of the traffic generator, by API version (demo/traffic.py).
_MIX: dict[str, list[tuple[str, str, float, float, int]]] = {
    "v1": [
        ("GET", "/v1/orders", 25, 0.02, 200),
        ("GET", "/v1/orders/{order_id}", 25, 0.01, 200),
        ("POST", "/v1/orders", 10, 0.04, 201),
        ("DELETE", "/v1/orders/{order_id}", 20, 0.02, 200),
        ("GET", "/v1/reports/{report_id}", 10, 0.15, 200),
        ("POST", "/v1/feedback", 1, 0.005, 202),
    ],
    "v2": [
        ("GET", "/v2/orders", 25, 0.015, 200),
        ("GET", "/v2/orders/{order_id}", 30, 0.008, 200),
        ("POST", "/v2/orders", 10, 0.035, 201),
        ("DELETE", "/v2/orders/{order_id}", 8, 0.015, 200),
        ("GET", "/v2/invoices/{invoice_id}", 8, 0.025, 200),
        ("GET", "/v2/search", 10, 0.08, 200),
        ("POST", "/v2/exports", 3, 0.12, 202),
        ("GET", "/v2/exports/{export_id}", 5, 0.02, 200),
        ("GET", "/v2/exports/{export_id}/download", 1.5, 0.4, 200),
        ("POST", "/v2/webhooks", 3, 0.03, 201),
        ("POST", "/v1/feedback", 1, 0.005, 202),
    ],
}
# Errors a day of normal use produces, as (status, share of the endpoint's calls).
_ERRORS = {
    ("GET", "/v1/orders/{order_id}"): (404, 0.02),
    ("DELETE", "/v1/orders/{order_id}"): (404, 0.02),
    ("GET", "/v2/orders/{order_id}"): (404, 0.02),
    ("DELETE", "/v2/orders/{order_id}"): (404, 0.02),
    ("POST", "/v2/orders"): (422, 0.01),
    ("GET", "/v2/search"): (400, 0.01),
    ("POST", "/v2/exports"): (503, 0.03),
    ("GET", "/v2/invoices/{invoice_id}"): (500, 0.011),  # the legacy ledger (INV-99xx)
}
# What one SDK gets wrong on one endpoint, over the other SDKs' share: (status, share).
_SDK_ERRORS: dict[tuple[str | None, str, str], tuple[int, float]] = {
    # As live (demo/traffic.py): quantities as text, "2 pcs" in 40 % of the lines of 1 to 4
    ("shop-sdk-js", "POST", "/v2/orders"): (422, 0.65),
    ("shop-cli", "POST", "/v2/exports"): (422, 0.5),  # `since` missing half of the time
}
# What a developer getting started gets wrong (like the generator's first requests).
_FIRST_TRIES = [("POST", "/v2/orders", 422), ("GET", "/v2/search", 400), ("POST", "/v2/exports", 422)]
_ONBOARDING_MEDIAN = {"enterprise": 600.0, "pro": 1200.0, "free": 2700.0}


def _catalog(path: Path = CATALOG) -> dict[tuple[str, str], dict]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    endpoints = ((data.get("services") or {}).get(SERVICE_NAME) or {}).get("endpoints") or []
    return {(e["method"], e["route"]): e for e in endpoints}


def _endpoints() -> dict[str, list[Endpoint]]:
    catalog = _catalog()
    out = {}
    for api, rows in _MIX.items():
        out[api] = [
            Endpoint(
                m,
                r,
                w,
                lat,
                st,
                (catalog.get((m, r)) or {}).get("feature"),
                bool((catalog.get((m, r)) or {}).get("deprecated")),
            )
            for m, r, w, lat, st in rows
        ]
    return out


def plan(
    plans: dict[str, str],
    *,
    seed: int | None,
    live_duration: float,
    days: int,
    now: float,
    rng: random.Random,
) -> list[Member]:
    """Who was there, when, doing what: the demo's consumers over the last `days` days."""
    start = now - days * DAY
    members = []
    live = population(plans, live_duration, random.Random(seed))
    for c in live:
        if c.joins_at > 0:  # joins during the live run: no history
            continue
        old = new = c.version
        migrated = None
        if c.api == "v2" and c.client is not None and rng.random() < 0.45:
            old = rng.choice(SDKS[c.client]["v1"])  # upgraded during the history
            migrated = rng.uniform(start + 0.3 * days * DAY, now - 3 * DAY)
        early = rng.random() < 0.45
        joined = start + rng.uniform(0, 0.1 * DAY) if early else rng.uniform(start, now - 2 * DAY)
        if migrated is not None and migrated <= joined:
            migrated = joined + rng.uniform(0.2, 0.8) * (now - joined)
        onboarding: float | None = (
            0.0
            if early
            else min(rng.lognormvariate(math.log(_ONBOARDING_MEDIAN.get(c.tier, 1800.0)), 1.0), 3 * DAY)
        )
        members.append(
            Member(c.key, c.tier, c.client, old, new, c.api, joined, c.activity, onboarding, migrated)
        )
    # A few of today's consumers nearly stop calling in the last week: one per tier.
    for tier in ("enterprise", "pro", "free"):
        candidates = [m for m in members if m.tier == tier and m.joined < now - 14 * DAY]
        if candidates:
            rng.choice(candidates).at_risk = True
    tiers = ["free"] * 9 + ["pro"] * 4 + ["enterprise"]
    for i in range(FORMER):
        tier = tiers[i % len(tiers)]
        client = rng.choice([*SDKS, None])
        api = "v1" if rng.random() < 0.5 else "v2"
        version = rng.choice(SDKS[client][api]) if client else "8.5.0"
        joined = rng.uniform(start, now - 10 * DAY)
        gives_up = i % 5 == 4  # never gets a call right, leaves within two days
        onboarding = (
            None if gives_up else min(rng.lognormvariate(math.log(_ONBOARDING_MEDIAN[tier]), 1.0), 2 * DAY)
        )
        churned = (
            joined + rng.uniform(0.2, 2) * DAY if gives_up else rng.uniform(joined + 4 * DAY, now - 2 * DAY)
        )
        members.append(
            Member(
                f"demo-former-{i + 1:02d}",
                tier,
                client,
                version,
                version,
                api,
                joined,
                {"enterprise": 4.0, "pro": 2.0}.get(tier, 1.0) * rng.uniform(0.5, 1.5),
                onboarding,
                churned=churned,
            )
        )
    return members


@dataclasses.dataclass
class Call:
    """One span: `count` calls of one endpoint by one member, ending at `at`."""

    at: float
    member: Member
    method: str
    route: str
    status: int
    latency: float
    count: float
    feature: str | None
    deprecated: bool
    first_try: bool = False  # a newcomer's failed try before a first success


def calls(
    members: list[Member], *, rate: float, days: int, now: float, rng: random.Random, incidents: int = 2
) -> list[Call]:
    """Every span of the history, oldest first."""
    endpoints = _endpoints()
    by_key = {(e.method, e.route): e for es in endpoints.values() for e in es}
    live_activity = sum(m.activity for m in members if m.churned is None) or 1.0
    per_activity = rate * DAY / live_activity  # calls per day per unit of activity
    first_day = int((now - days * DAY) // DAY)
    last_day = int(now // DAY)
    incident_hours = [rng.uniform(now - (days - 2) * DAY, now - 2 * DAY) for _ in range(incidents)]
    out: list[Call] = []
    for m in members:
        # Getting started: failed tries, then (unless giving up) the first success.
        tries = rng.randint(1, 4) if (m.onboarding is None or m.onboarding > 0) else 0
        trying = m.onboarding if m.onboarding is not None else (m.churned or now) - m.joined
        for i in range(tries):
            method, route, status = rng.choice(_FIRST_TRIES)
            e = by_key[method, route]
            out.append(
                Call(
                    m.joined + trying * i / max(tries, 1),
                    m,
                    method,
                    route,
                    status,
                    e.latency * 0.3,
                    1.0,
                    e.feature,
                    e.deprecated,
                    first_try=True,
                )
            )
        if m.onboarding is None:
            continue
        active_from = m.joined + m.onboarding
        active_to = min(m.churned or now, now - 60)
        first = endpoints[m.api_at(active_from)][0]
        out.append(
            Call(
                active_from,
                m,
                first.method,
                first.route,
                first.status,
                first.latency,
                1.0,
                first.feature,
                first.deprecated,
            )
        )
        pieces = []  # (start, end) of each stretch of a day on one API version
        for day in range(first_day, last_day + 1):
            lo, hi = max(day * DAY, active_from + 1), min((day + 1) * DAY, active_to)
            if m.migrated is not None and lo < m.migrated < hi:
                pieces += [(day, lo, m.migrated), (day, m.migrated, hi)]
            elif lo < hi:
                pieces.append((day, lo, hi))
        for day, lo, hi in pieces:
            weekday = (day + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
            volume = (
                m.activity
                * per_activity
                * (hi - lo)
                / DAY
                * (0.55 if weekday >= 5 else 1.0)
                * rng.lognormvariate(0, 0.2)
                * min(1.0, 0.3 + (lo - m.joined) / (7 * DAY))
            )
            if m.at_risk and day * DAY >= now - 7 * DAY:
                volume *= 0.1
            mix = endpoints[m.api_at(lo)]
            total_weight = sum(e.weight * _free_share(m, e) for e in mix)
            for e in mix:
                if m.tier == "free" and e.route == "/v2/webhooks":
                    n = volume * e.weight / total_weight
                    out.append(
                        Call(
                            rng.uniform(lo, hi), m, e.method, e.route, 403, 0.004, n, e.feature, e.deprecated
                        )
                    )
                    continue
                share = _free_share(m, e)
                n = volume * e.weight * share / total_weight
                if n < 0.5:
                    continue
                status, error_share = _SDK_ERRORS.get(
                    (m.client, e.method, e.route), _ERRORS.get((e.method, e.route), (0, 0.0))
                )
                if error_share:
                    out.append(
                        Call(
                            rng.uniform(lo, hi),
                            m,
                            e.method,
                            e.route,
                            status,
                            e.latency * 0.5,
                            n * error_share,
                            e.feature,
                            e.deprecated,
                        )
                    )
                    n *= 1 - error_share
                latency = e.latency * rng.lognormvariate(0, 0.25)
                out.append(
                    Call(
                        rng.uniform(lo, hi),
                        m,
                        e.method,
                        e.route,
                        e.status,
                        latency,
                        n * (1 - _TAIL),
                        e.feature,
                        e.deprecated,
                    )
                )
                out.append(
                    Call(
                        rng.uniform(lo, hi),
                        m,
                        e.method,
                        e.route,
                        e.status,
                        min(latency * rng.uniform(3, 8), 3.0),
                        n * _TAIL,
                        e.feature,
                        e.deprecated,
                    )
                )
            for incident in incident_hours:  # an hour of 500s on the member's calls
                if lo <= incident < hi - 3600 and mix:
                    e = rng.choice(mix)
                    out.append(
                        Call(
                            incident + rng.uniform(0, 3600),
                            m,
                            e.method,
                            e.route,
                            500,
                            0.9,
                            volume / 24 * 0.4,
                            e.feature,
                            e.deprecated,
                        )
                    )
    out.sort(key=lambda c: c.at)
    return _whole(out, rng)


def _whole(out: list[Call], rng: random.Random) -> list[Call]:
    """Each span stands for at least one call: a sampled span's adjusted count is never below 1
    (the processor counts 1 for it), so a share under one call is kept with that probability, as
    one call. Short stretches (the first hours of today) made ~60 such shares, 58 calls too many."""
    kept = []
    for c in out:
        if c.count >= 1.0:
            kept.append(c)
        elif rng.random() < c.count:
            kept.append(dataclasses.replace(c, count=1.0))
    return kept


def _free_share(m: Member, e: Endpoint) -> float:
    """Free-plan consumers create (and download) fewer exports."""
    if m.tier != "free":
        return 1.0
    if (e.method, e.route) == ("POST", "/v2/exports"):
        return 0.3
    return 0.2 if e.route.endswith("/download") else 1.0


# Query parameters each SDK sends to GET /v2/orders (the live traffic's habits, most common form).
_LIST_PARAMETERS = {"shop-sdk-python": ["cursor", "limit"], "shop-sdk-js": ["expand", "limit"]}
# Body fields of each POST, and of the SDKs that send more; request body sizes.
_BODY = {
    ("POST", "/v1/orders"): (["lines"], 160),
    ("POST", "/v2/orders"): (["lines"], 160),
    ("POST", "/v2/exports"): (["kind", "since"], 40),
    ("POST", "/v2/webhooks"): (["events", "url"], 70),
    ("POST", "/v1/feedback"): (["category", "score"], 40),
}
_SDK_BODY = {
    ("shop-sdk-python", "POST", "/v2/orders"): (["lines", "shipping"], 190),
    ("shop-sdk-js", "POST", "/v2/orders"): (["coupon", "lines"], 185),
    ("shop-sdk-python", "POST", "/v2/exports"): (["format", "kind", "since"], 58),
}
# Response body sizes in bytes by (method, route) on success, and by error status.
_RESPONSE = {
    ("GET", "/v1/orders"): 1_300,
    ("GET", "/v2/orders"): 1_900,
    ("GET", "/v1/reports/{report_id}"): 24,
    ("GET", "/v2/search"): 12,
    ("POST", "/v2/exports"): 48,
}
_ERROR_RESPONSE = {400: 24, 403: 50, 404: 36, 422: 190, 500: 21, 503: 52}
# error.type of the history's 5xx: the framework's answer for 503 and incident 500s, the
# exception of the legacy ledger.
_ERROR_TYPES = {("GET", "/v2/invoices/{invoice_id}"): "LedgerUnavailable"}


def _validation(c: Call) -> list[tuple[str, str]]:
    m = c.member
    if c.route == "/v2/orders" and m.client == "shop-sdk-js" and not c.first_try:
        return [("body.lines.*.quantity", "int_parsing")]
    if c.route == "/v2/orders":
        return [("body.lines", "too_short")]
    if c.route == "/v2/exports" and m.client == "shop-cli" and not c.first_try:
        return [("body.since", "missing")]
    return [("body.kind", "string_pattern_mismatch"), ("body.since", "string_pattern_mismatch")]


def export_size_at(at: float, now: float) -> int:
    """Bytes of an export download at `at`: today's size, less by EXPORT_WEEKLY_GROWTH a week back."""
    return int(EXPORT_BASE_BYTES * EXPORT_WEEKLY_GROWTH ** ((at - now) / WEEK))


def design(c: Call, now: float) -> dict[str, object]:
    """The schema version 2 attributes of a history span: names, sizes, validation errors, region."""
    from ..otlp import design_attributes

    m, key = c.member, (c.method, c.route)
    query: list[str] | None = None
    if key == ("GET", "/v2/orders"):
        query = _LIST_PARAMETERS.get(m.client or "", ["limit"] if m.client else None)
    elif key == ("GET", "/v1/orders"):
        query = ["limit"]
    elif key == ("GET", "/v2/search") and c.status != 400:
        query = ["q"]
    fields, request_size = _SDK_BODY.get((m.client or "", *key)) or _BODY.get(key) or (None, None)
    errors = _validation(c) if c.status == 422 else None
    if errors == [("body.since", "missing")]:
        fields, request_size = ["kind"], 18
    if c.status >= 400:
        response = _ERROR_RESPONSE.get(c.status, 30)
    elif c.route.endswith("/download"):
        response = export_size_at(c.at, now)
    else:
        response = _RESPONSE.get(key, 40 if c.method != "DELETE" else 16)
    error_type = None
    if c.status >= 500:
        error_type = _ERROR_TYPES.get(key, str(c.status)) if c.status == 500 else str(c.status)
    return design_attributes(
        query_parameters=query,
        body_fields=fields,
        request_size=request_size,
        response_size=response,
        validation_errors=errors,
        client_region=region_of(m.key),
        error_type=error_type,
    )


@dataclasses.dataclass(frozen=True)
class Feedback:
    """One developer feedback post of the history."""

    at: float
    member: Member
    score: int
    category: str
    route: str | None


def feedback(members: list[Member], *, now: float, rng: random.Random) -> list[Feedback]:
    """Feedback posts of the history, oldest first: every few days per active consumer, each
    consumer with its own mood and favourite topic (``traffic.opinion_of``, as live)."""
    out = []
    for m in members:
        if m.onboarding is None:
            continue
        mood, topic = opinion_of(m.key, m.client)
        t = m.joined + m.onboarding + rng.expovariate(1 / FEEDBACK_EVERY)
        end = min(m.churned or now, now - 60)
        while t < end:
            category = topic if rng.random() < 0.7 else rng.choice(list(TOPICS))
            route = "/v2/orders" if category == "errors" and m.client == "shop-sdk-js" else None
            score = max(1, min(5, round(rng.gauss(mood, 0.8))))
            out.append(Feedback(t, m, score, category, route))
            t += rng.expovariate(1 / FEEDBACK_EVERY)
    out.sort(key=lambda f: f.at)
    return out


def encode_feedback(batch: list[Feedback], pseudonym: Callable[[str], str]) -> bytes:
    from ..otlp import feedback_request

    resource = {"service.name": SERVICE_NAME, "service.version": RELEASES[0], "cloud.region": SERVER_REGION}
    events = [
        {
            "score": f.score,
            "category": f.category,
            "route": f.route,
            "consumer_id": pseudonym(f.member.key),
            "time_ns": int(f.at * 1e9),
        }
        for f in batch
    ]
    return feedback_request(resource, events, scope="apiusage.demo.backfill").SerializeToString()


def _tracestate(count: float) -> str:
    """W3C tracestate whose OpenTelemetry threshold makes the span stand for `count` spans."""
    if count <= 1.0:
        return ""
    threshold = round((1 << 56) * (1 - 1 / count))
    return f"ot=th:{min(threshold, (1 << 56) - 1):014x}"


def encode(
    batch: list[Call], pseudonym: Callable[[str], str], *, now: float | None = None, upgraded: float = 0.0
) -> bytes:
    """Spans of `batch` as one OTLP request; those from `upgraded` on are schema version 2."""
    # opentelemetry-proto comes with the processor extra: imported when the backfill runs.
    from ..otlp import ExportTraceServiceRequest, add_resource, add_span

    now = time.time() if now is None else now
    request = ExportTraceServiceRequest()
    resource = {
        "service.name": SERVICE_NAME,
        "service.version": RELEASES[0],
        "cloud.region": SERVER_REGION,
        "apiusage.demo.backfill": "true",
    }
    scope = add_resource(request, resource, scope="apiusage.demo.backfill")
    for c in batch:
        end_ns = int(c.at * 1e9)
        m = c.member
        v2 = c.at >= upgraded
        attrs: list[tuple[str, object]] = [
            ("http.request.method", c.method),
            ("http.route", c.route),
            ("http.response.status_code", c.status),
            ("url.scheme", "http"),
            ("apiusage.schema_version", 2 if v2 else 1),
            ("apiusage.consumer.id", pseudonym(m.key)),
            ("apiusage.consumer.plan_tier", m.tier),
            ("apiusage.api.version", c.route.split("/")[1]),
            ("apiusage.endpoint.deprecated", c.deprecated),
        ]
        if m.client is not None:
            version = m.version_at(c.at)
            attrs += [
                ("apiusage.client.name", m.client),
                ("apiusage.client.version", version),
                ("user_agent.original", f"{m.client}/{version}"),
            ]
        else:
            attrs.append(("user_agent.original", "curl/8.5.0"))
        if c.feature:
            attrs.append(("apiusage.feature", c.feature))
        if v2:
            attrs += [(k, v) for k, v in design(c, now).items() if k != "apiusage.schema_version"]
        add_span(
            scope,
            dict(attrs),
            name=f"{c.method} {c.route}",
            start_ns=end_ns - int(c.latency * 1e9),
            end_ns=end_ns,
            trace_state=_tracestate(c.count),
        )
    return request.SerializeToString()


@dataclasses.dataclass
class BackfillResult:
    spans: int
    calls: float
    consumers: int
    days: int
    seconds: float
    feedback: int = 0  # feedback events sent


class Backfill:
    """Plan the history, then send it in batches, reporting progress."""

    def __init__(
        self,
        plans: dict[str, str],
        pseudonym_key: str,
        *,
        days: int,
        rate: float,
        seed: int | None,
        live_duration: float,
        now: float | None = None,
    ) -> None:
        from apiusage.instrumentation._resolvers import Pseudonymizer

        self.now = time.time() if now is None else now
        self.days = days
        rng = random.Random(None if seed is None else seed + 1)
        self.members = plan(plans, seed=seed, live_duration=live_duration, days=days, now=self.now, rng=rng)
        self.calls = calls(self.members, rate=rate, days=days, now=self.now, rng=rng)
        self.feedback = feedback(self.members, now=self.now, rng=rng)
        self.upgraded = self.now - UPGRADED_DAYS_AGO * DAY
        self.pseudonym = Pseudonymizer(pseudonym_key.encode())

    def send(
        self,
        http_endpoint: str,
        progress: Callable[[int, int, float], None] | None = None,
        stop: Callable[[], bool] = lambda: False,
        timeout: float = 60.0,
    ) -> BackfillResult:
        """POST every batch to `http_endpoint` (…/v1/traces), then the feedback events to its
        /v1/logs sibling; retries while the queue is full."""
        started = time.monotonic()
        total = len(self.calls)
        done = 0
        for i in range(0, total, BATCH):
            if stop():
                break
            batch = self.calls[i : i + BATCH]
            _post(
                http_endpoint,
                encode(batch, self.pseudonym, now=self.now, upgraded=self.upgraded),
                stop,
                timeout,
            )
            done += len(batch)
            if progress is not None:
                progress(done, total, batch[-1].at)
        logs = http_endpoint.removesuffix("/v1/traces") + "/v1/logs"
        sent = 0
        if done == total:
            for i in range(0, len(self.feedback), BATCH):
                if stop():
                    break
                batch_f = self.feedback[i : i + BATCH]
                _post(logs, encode_feedback(batch_f, self.pseudonym), stop, timeout)
                sent += len(batch_f)
        return BackfillResult(
            done,
            sum(c.count for c in self.calls[:done]),
            len(self.members),
            self.days,
            time.monotonic() - started,
            sent,
        )


def _post(endpoint: str, body: bytes, stop: Callable[[], bool], timeout: float) -> None:
    """POST one OTLP/HTTP protobuf body, retrying while the processor answers 503."""
    deadline = time.monotonic() + timeout
    while True:
        request = urllib.request.Request(
            endpoint, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline or stop():
                raise BackfillError(
                    f"the processor answered {exc.code} to the history at {endpoint}: {exc.read()[:200]!r}"
                ) from None
            time.sleep(min(float(exc.headers.get("Retry-After") or 1), 2.0))
        except (urllib.error.URLError, OSError) as exc:
            raise BackfillError(
                f"cannot send the history to {endpoint}: {getattr(exc, 'reason', exc)}"
            ) from None
