"""Synthetic consumer histories for bench/state_scale.py, and the metric values they must give.

`History(n, seed)` plays 90 days of one service's traffic, one day after the other, and yields
`ActivityBatch`es as the flush thread would write them (rows deduplicated per flush, one consumer
day never split between two flushes).  The shape is meant to be unflattering, not pretty:

* consumers arrive over the 90 days (30% are there from day 0), with a pseudonymous id as the
  instrumentation exports it (32 hex digits of an HMAC-SHA256);
* they are daily (35%), weekly (35%) or sporadic (30%) callers; 20% churn for good, 10% fade
  (a tenth of their calls over the last 10 days: consumers at risk);
* plan tiers free 70% / pro 25% / enterprise 5%; 6% of free consumers upgrade to pro later, 1%
  on their very first day (a `free` then `pro` first flush: the new-consumer counter's case);
* 43 endpoints of Zipf-like popularity (40 under /v2, 3 deprecated /v1 ones with replacements
  in the catalog), 10 features (the DELETE endpoints have none); 5-20 endpoints a day out of a
  profile of 8-25; legacy consumers move off the deprecated endpoints at some day (or never);
* 4 clients (3 SDKs with releases over the period, and curl); consumers upgrade now and then;
* 12% fail before their first success (seconds to days later), 3% never succeed.

`Expected` recomputes, from the rows alone, the values `build_report()` must return today.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import random
from collections import defaultdict
from collections.abc import Iterator

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SERVICE = "shop-api"
DAYS = 90
TODAY = (dt.date(2026, 12, 1) - dt.date(1970, 1, 1)).days  # the last day of the history
FIRST_DAY = TODAY - DAYS + 1
NOW_MS = TODAY * DAY_MS + 22 * HOUR_MS  # refresh time: every call of the last day is before it
_LAST_CALL_MS = 21 * HOUR_MS + 59 * 60_000  # latest time of day a call is made

_RESOURCES = [
    "orders",
    "customers",
    "products",
    "invoices",
    "payments",
    "carts",
    "shipments",
    "refunds",
    "reports",
    "webhooks",
]
# (method, route, feature): the feature of a resource, none on DELETE.
ENDPOINTS: list[tuple[str, str, str]] = []
for _res in _RESOURCES:
    _item = f"/v2/{_res}/{{{_res[:-1]}_id}}"
    ENDPOINTS += [
        ("GET", f"/v2/{_res}", _res),
        ("POST", f"/v2/{_res}", _res),
        ("GET", _item, _res),
        ("DELETE", _item, ""),
    ]
# deprecated (method, route, feature) → its replacement among ENDPOINTS
DEPRECATED = {
    ("GET", "/v1/orders", "orders"): ("GET", "/v2/orders", "orders"),
    ("GET", "/v1/customers/{customer_id}", "customers"): ("GET", "/v2/customers/{customer_id}", "customers"),
    ("POST", "/v1/payments", "payments"): ("POST", "/v2/payments", "payments"),
}
ALL_ENDPOINTS = ENDPOINTS + list(DEPRECATED)
# client name → [(version, day of release relative to FIRST_DAY)]
CLIENTS = {
    "shop-sdk-python": [("2.0.0", -200), ("2.1.0", 20), ("2.2.0", 50), ("2.3.0", 75)],
    "shop-sdk-js": [("4.8.1", -300), ("4.9.0", 30), ("5.0.0", 60)],
    "shop-sdk-go": [("1.3.0", -100), ("1.4.0", 40)],
    "curl": [("8.5.0", -400)],
}
_CLIENT_WEIGHTS = [0.45, 0.3, 0.15, 0.1]
_PLANS = ["free", "pro", "enterprise"]
_PLAN_WEIGHTS = [0.70, 0.25, 0.05]


def catalog_document() -> dict:
    """The endpoint catalog (as YAML would give it): every endpoint, the deprecated ones with a
    sunset and a replacement."""
    endpoints = [{"method": m, "route": r, **({"feature": f} if f else {})} for m, r, f in ENDPOINTS]
    for (m, r, f), (rm, rr, _) in DEPRECATED.items():
        endpoints.append(
            {
                "method": m,
                "route": r,
                "feature": f,
                "deprecated": "2026-09-01",
                "sunset": "2027-03-31",
                "replacement": f"{rm} {rr}",
            }
        )
    return {"services": {SERVICE: {"endpoints": endpoints}}}


def consumer_id(seed: int, i: int) -> str:
    """A pseudonym as the instrumentation's Pseudonymizer makes it (HMAC-SHA256, 32 hex digits)."""
    return hmac.new(f"bench-{seed}".encode(), f"api-key-{i}".encode(), hashlib.sha256).hexdigest()[:32]


class _Consumer:
    __slots__ = (
        "id",
        "arrival",
        "kind",
        "weekday",
        "churn",
        "fade",
        "plan",
        "upgrade_day",
        "first_day_upgrade",
        "profile",
        "weights",
        "legacy",
        "migrate_day",
        "client",
        "version",
        "success_at",
        "volume",
        "error_rate",
        "started",
    )

    def __init__(self, rng: random.Random, seed: int, i: int, popularity: list[float]) -> None:
        self.id = consumer_id(seed, i)
        self.arrival = 0 if rng.random() < 0.3 else rng.randrange(DAYS)
        r = rng.random()
        self.kind = 0 if r < 0.35 else 1 if r < 0.70 else 2  # daily, weekly, sporadic
        self.weekday = rng.randrange(7)
        self.churn = self.arrival + rng.randint(3, 60) if rng.random() < 0.2 else DAYS
        self.fade = rng.random() < 0.1
        self.plan = rng.choices(_PLANS, _PLAN_WEIGHTS)[0]
        self.upgrade_day = DAYS
        self.first_day_upgrade = False
        if self.plan == "free":
            if rng.random() < 0.01:
                self.first_day_upgrade = True
            elif rng.random() < 0.06:
                self.upgrade_day = self.arrival + rng.randint(1, 60)
        k = rng.randint(8, 25)
        chosen: dict[int, float] = {}
        while len(chosen) < k:  # weighted sampling without replacement
            j = rng.choices(range(len(ENDPOINTS)), popularity)[0]
            chosen[j] = popularity[j]
        self.profile = [ENDPOINTS[j] for j in chosen]
        self.weights = [w for w in chosen.values()]
        # Legacy consumers (arrived in the first half) still call some deprecated endpoints.
        self.legacy = [d for d in DEPRECATED if self.arrival < 45 and rng.random() < 0.35]
        self.migrate_day = self.arrival + rng.randint(7, 120) if rng.random() < 0.6 else 10_000
        self.client = rng.choices(list(CLIENTS), _CLIENT_WEIGHTS)[0]
        released = [v for v, d in CLIENTS[self.client] if d <= self.arrival]
        self.version = released[-1] if rng.random() < 0.7 else released[0]
        r = rng.random()
        self.success_at: float = (
            0.0
            if r < 0.85
            else math.inf
            if r < 0.88
            else math.exp(rng.uniform(0, math.log(3 * DAY_MS / 1000))) * 1000
        )  # ms after the first call
        self.volume = math.exp(rng.gauss(1.5, 1.0))
        self.error_rate = rng.choice((0.0, 0.0, 0.01, 0.02, 0.05))
        self.started: int | None = None  # ms of the first call

    def active(self, rng: random.Random, d: int) -> bool:
        if d < self.arrival or d >= self.churn:
            return False
        if d == self.arrival:
            return True
        if self.kind == 0:
            return rng.random() < 0.6
        if self.kind == 1:
            return (FIRST_DAY + d) % 7 == self.weekday or rng.random() < 0.1
        return rng.random() < 0.07


ConsumerDay = tuple[tuple, list[tuple]]  # (consumer row, activity rows)


class History:
    """Deterministic 90-day history of `n` consumers; iterate `batches()` once."""

    def __init__(self, n: int, seed: int = 13, batch_rows: int = 50_000) -> None:
        self.n, self.seed, self.batch_rows = n, seed, batch_rows
        rng = random.Random(seed)
        order = list(range(len(ENDPOINTS)))
        rng.shuffle(order)  # popularity rank of each endpoint
        popularity = [1 / (1 + order[j]) ** 1.1 for j in range(len(ENDPOINTS))]
        self._rng = random.Random(seed * 1_000_003 + n)
        self.consumers = [_Consumer(self._rng, seed, i, popularity) for i in range(n)]
        self.facts = 0  # activity rows generated
        self.batches_written = 0
        self.last_day: list[ConsumerDay] = []  # the last day's rows, for the flush benchmark

    def _day(self, c: _Consumer, d: int) -> ConsumerDay:
        rng = self._rng
        day = FIRST_DAY + d
        start = day * DAY_MS + rng.randrange(6 * HOUR_MS, 20 * HOUR_MS)
        if c.started is None:
            c.started = start
        end = day * DAY_MS + _LAST_CALL_MS
        plan = c.plan
        if d >= c.upgrade_day:
            plan = "pro"
        if rng.random() < 0.1:  # an upgrade to the newest release out that day
            c.version = [v for v, r in CLIENTS[c.client] if r <= d][-1]
        scale = 0.1 if c.fade and d >= DAYS - 10 else 1.0
        endpoints = rng.sample(c.profile, min(len(c.profile), rng.randint(5, 20)))
        if c.legacy:
            for dep in c.legacy:
                if d < c.migrate_day + 3:
                    endpoints.append(dep)
                if d >= c.migrate_day:  # a few days calling both, then the replacement only
                    endpoints.append(DEPRECATED[dep])
            endpoints = list(dict.fromkeys(endpoints))
        success_ms = c.started + c.success_at
        failing = success_ms > end
        rows = []
        last_seen = start
        for method, route, feature in endpoints:
            calls = float(max(1, round(c.volume * scale * rng.expovariate(1.0) * 3)))
            errors = calls if failing else float(round(calls * c.error_rate))
            last = rng.randrange(start, end + 1)
            last_seen = max(last_seen, last)
            rows.append(
                (day, SERVICE, c.id, method, route, feature, c.client, c.version, calls, errors, last)
            )
        first_success = None
        if success_ms <= last_seen:
            first_success = max(start, int(success_ms))
        first_plan = plan
        if c.first_day_upgrade:
            first_plan, plan = ("free", "pro") if d == c.arrival else ("pro", "pro")
        consumer = (SERVICE, c.id, start, first_success, last_seen, first_plan, plan, c.client, c.version)
        return consumer, rows

    def batches(self) -> Iterator[tuple[int, tuple[list, list, list]]]:
        """(day index, batch) for every flush, in time order; batch rows in the 9-field
        consumer-row shape (first_plan_tier included)."""
        for d in range(DAYS):
            consumers: list[tuple] = []
            activity: list[tuple] = []
            last = d == DAYS - 1
            for c in self.consumers:
                if not c.active(self._rng, d):
                    continue
                consumer, rows = self._day(c, d)
                consumers.append(consumer)
                activity += rows
                if last:
                    self.last_day.append((consumer, rows))
                if len(activity) >= self.batch_rows:
                    yield d, self._batch(consumers, activity)
                    consumers, activity = [], []
            if activity:
                yield d, self._batch(consumers, activity)

    def _batch(self, consumers: list, activity: list) -> tuple[list, list, list]:
        self.facts += len(activity)
        self.batches_written += 1
        return consumers, activity, endpoint_rows(activity)


def endpoint_rows(activity: list[tuple]) -> list[tuple]:
    """The endpoints table rows a flush of these activity rows carries."""
    seen: dict[tuple, list[int]] = {}
    for row in activity:
        key = (row[1], row[3], row[4])
        at = row[10]
        e = seen.get(key)
        if e is None:
            seen[key] = [at, at]
        else:
            e[0], e[1] = min(e[0], at), max(e[1], at)
    deprecated = {(m, r) for m, r, _ in DEPRECATED}
    return [
        (s, m, r, 1 if (m, r) in deprecated else 0, first, last) for (s, m, r), (first, last) in seen.items()
    ]


def week_of(day: int) -> int:
    return (day + 3) // 7


class Expected:
    """The values build_report() must give, recomputed from the batches in plain Python."""

    WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
    TTFS_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 259200.0, 604800.0)

    def __init__(self) -> None:
        self.sinces = {w: NOW_MS - d * DAY_MS for w, d in self.WINDOWS.items()}
        # consumer → [first_seen, first_plan, first_success, last_seen, plan]
        self.consumers: dict[str, list] = {}
        self.endpoint: dict[tuple, set] = defaultdict(set)
        self.feature: dict[tuple, set] = defaultdict(set)
        self.client: dict[tuple, set] = defaultdict(set)
        self.weeks: set[tuple[str, int]] = set()  # (consumer, week) with activity
        self.calls: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # recent, before
        # (consumer, method, route) → [(day, last_call)] on deprecated endpoints and replacements
        self.days: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
        self._watched = {(m, r) for m, r, _ in DEPRECATED} | {(m, r) for m, r, _ in DEPRECATED.values()}

    def add(self, batch: tuple[list, list, list]) -> None:
        consumers, activity, _ = batch
        for _, c, first, success, last, first_plan, plan, _, _ in consumers:
            cur = self.consumers.get(c)
            if cur is None:
                self.consumers[c] = [first, first_plan, success, last, plan]
                continue
            if first < cur[0]:
                cur[0], cur[1] = first, first_plan
            if success is not None and (cur[2] is None or success < cur[2]):
                cur[2] = success
            if last >= cur[3]:
                cur[3], cur[4] = last, plan
        for day, s, c, m, r, f, cn, cv, calls, _, last in activity:
            for w, since in self.sinces.items():
                if last >= since:
                    self.endpoint[s, m, r, w].add(c)
                    self.client[s, cn, cv, w].add(c)
                    if f:
                        self.feature[s, f, w].add(c)
            self.weeks.add((c, week_of(day)))
            if TODAY - 34 <= day <= TODAY:
                self.calls[c][0 if day >= TODAY - 6 else 1] += calls
            if (m, r) in self._watched:
                self.days[c, m, r].append((day, last))

    def values(self) -> dict[str, dict]:
        """family → {labels: value} as ConsumerReport holds them."""
        out: dict[str, dict] = {}
        active: dict[tuple, int] = defaultdict(int)
        new: dict[tuple, int] = defaultdict(int)
        for _, first_plan, _, last, plan in self.consumers.values():
            new[SERVICE, first_plan] += 1
            for w, since in self.sinces.items():
                if last >= since:
                    active[SERVICE, plan, w] += 1
        out["active"], out["new"] = dict(active), dict(new)
        out["endpoint_consumers"] = {k: len(v) for k, v in self.endpoint.items()}
        out["feature_consumers"] = {k: len(v) for k, v in self.feature.items()}
        out["client_versions"] = {k: len(v) for k, v in self.client.items()}
        out["deprecated_consumers"] = {
            (SERVICE, m, r, w): len(self.endpoint.get((SERVICE, m, r, w), ()))
            for m, r, _ in DEPRECATED
            for w in self.WINDOWS
        }
        migrated: dict[tuple, int] = {}
        for (m, r, _), (rm, rr, _) in DEPRECATED.items():
            for w, since in self.sinces.items():
                n = 0
                for c in self.consumers:
                    dep = [day for day, last in self.days.get((c, m, r), ()) if last >= since]
                    if dep and any(day >= min(dep) for day, _ in self.days.get((c, rm, rr), ())):
                        n += 1
                migrated[SERVICE, m, r, w] = n
        out["migrated"] = migrated
        ttfs: dict[tuple, tuple[list[int], float, int]] = {}
        n_buckets = len(self.TTFS_BUCKETS) + 1
        for first, first_plan, success, _, _ in self.consumers.values():
            if success is None:
                continue
            counts, total, count = ttfs.get((SERVICE, first_plan), ([0] * n_buckets, 0.0, 0))
            seconds = max(0, success - first) / 1000
            counts[next((i for i, b in enumerate(self.TTFS_BUCKETS) if seconds <= b), n_buckets - 1)] += 1
            ttfs[SERVICE, first_plan] = (counts, total + seconds, count + 1)
        out["ttfs"] = ttfs
        at_risk: dict[tuple, int] = defaultdict(int)
        for c, (recent, before) in self.calls.items():
            average = before / 4
            at_risk[SERVICE, self.consumers[c][4]] += average > 0 and recent < 0.5 * average
        out["at_risk"] = dict(at_risk)
        this_week = week_of(TODAY)
        first_day = (this_week - 11) * 7 - 3
        cohort_of = {
            c: week_of(v[0] // DAY_MS) for c, v in self.consumers.items() if v[0] >= first_day * DAY_MS
        }
        sizes: dict[int, int] = defaultdict(int)
        for week in cohort_of.values():
            sizes[week] += 1
        retained: dict[tuple[int, int], int] = defaultdict(int)
        for c, week in self.weeks:
            cohort = cohort_of.get(c)
            if cohort is not None and week >= cohort:
                retained[cohort, week - cohort] += 1
        cohorts = {}
        for cohort, size in sizes.items():
            label = (dt.date(1970, 1, 1) + dt.timedelta(days=cohort * 7 - 3)).isoformat()
            for since in range(this_week - cohort + 1):
                cohorts[SERVICE, label, str(since)] = retained.get((cohort, since), 0) / size
        out["cohorts"] = cohorts
        return out


def compare(expected: dict[str, dict], report) -> list[str]:
    """Mismatches between Expected.values() and a ConsumerReport, one line each (at most 5 a family)."""
    problems = []
    for family, want in expected.items():
        got = getattr(report, family)
        bad = []
        for key in sorted(set(want) | set(got), key=repr):
            w, g = want.get(key), got.get(key)
            if family == "ttfs" and w is not None and g is not None:
                same = list(w[0]) == list(g[0]) and w[2] == g[2] and math.isclose(w[1], g[1], rel_tol=1e-9)
            elif family == "cohorts" and w is not None and g is not None:
                same = math.isclose(w, g, rel_tol=1e-12)
            else:
                same = w == g
            if not same:
                bad.append(f"{family}{key}: want {w}, got {g}")
        problems += bad[:5] + ([f"{family}: {len(bad) - 5} more"] if len(bad) > 5 else [])
    return problems
