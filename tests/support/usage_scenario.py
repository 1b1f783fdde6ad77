"""A scripted month and a half of consumers, with the metric values it must produce.

Times are relative to NOW, midnight UTC today, so every call is in the past and
each one falls on a known day: `at(d, h)` is `h` o'clock, `d` days before today.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.request

from apiusage.demo.otlp import ExportTraceServiceRequest, add_resource, add_span

DAY_MS = 86_400_000
TODAY = int(time.time() * 1000) // DAY_MS
NOW_MS = TODAY * DAY_MS
SERVICE = "orders-api"

CATALOG = """
services:
  orders-api:
    endpoints:
      - {method: GET, route: /v1/orders, feature: orders}
      - method: DELETE
        route: /v1/orders/{order_id}
        deprecated: 2026-09-01
        sunset: 2027-01-31
        replacement: DELETE /v2/orders/{order_id}
      - {method: DELETE, route: "/v2/orders/{order_id}"}
      - {method: GET, route: /v1/legacy-report}
"""
PLANS_CSV = "consumer_id,plan_tier,account\nerin,enterprise,Erin Corp\n"


def at(days_ago: int, hour: int) -> int:
    return NOW_MS - days_ago * DAY_MS + hour * 3_600_000


def call(
    days_ago: int,
    hour: int,
    consumer: str,
    method: str,
    route: str,
    status: int,
    *,
    plan: str | None,
    client: tuple[str, str] | None = ("orders-sdk", "1.2.0"),
    ua: str | None = None,
    feature: str | None = "orders",
) -> dict:
    return dict(
        at=at(days_ago, hour),
        consumer=consumer,
        method=method,
        route=route,
        status=status,
        plan=plan,
        client=client,
        ua=ua,
        feature=feature,
    )


V1_DELETE = "/v1/orders/{order_id}"
V2_DELETE = "/v2/orders/{order_id}"


def calls() -> list[dict]:
    out = []
    for d in range(1, 41):  # alice: steady, one call a day for 40 days
        out.append(call(d, 10, "alice", "GET", "/v1/orders", 200, plan="pro"))
    bob = dict(plan="free", client=("orders-sdk", "1.0.0"))
    out += [  # bob: fails first (401), succeeds 2 h later, migrates to v2
        call(20, 1, "bob", "GET", "/v1/orders", 401, **bob),
        call(20, 3, "bob", "DELETE", V1_DELETE, 204, **bob),
        call(10, 5, "bob", "DELETE", V1_DELETE, 204, **bob),
        call(5, 5, "bob", "DELETE", V2_DELETE, 204, **bob),
    ]
    for d in range(8, 35):  # carol: ten calls a day, then almost nothing
        out += [call(d, 12, "carol", "GET", "/v1/orders", 200, plan="pro")] * 10
    out.append(call(2, 12, "carol", "DELETE", V1_DELETE, 204, plan="pro"))
    dave = dict(plan="enterprise", client=None, ua="curl/8.5.0", feature="reports")
    out += [  # dave: never succeeds
        call(3, 8, "dave", "GET", "/v1/reports", 500, **dave),
        call(1, 8, "dave", "GET", "/v1/reports", 500, **dave),
    ]
    out.append(call(1, 9, "erin", "GET", "/v1/orders", 200, plan=None))  # plan from lookup
    return out


def recent_consumers(first: int, last: int) -> list[dict]:
    """One successful call an hour ago for each of consumers c<first> … c<last - 1> (plan pro)."""
    recent = int(time.time() * 1000) - 3_600_000
    return [
        dict(call(0, 0, f"c{i:03d}", "GET", "/v1/orders", 200, plan="pro"), at=recent)
        for i in range(first, last)
    ]


def request(batch: list[dict]) -> bytes:
    req = ExportTraceServiceRequest()
    scope = add_resource(req, {"service.name": SERVICE})
    for c in batch:
        end_ns = c["at"] * 1_000_000
        attributes = {
            "http.request.method": c["method"],
            "http.route": c["route"],
            "http.response.status_code": c["status"],
            "apiusage.consumer.id": c["consumer"],
        }
        if c["plan"]:
            attributes["apiusage.consumer.plan_tier"] = c["plan"]
        if c["client"]:
            attributes["apiusage.client.name"], attributes["apiusage.client.version"] = c["client"]
        if c["ua"]:
            attributes["user_agent.original"] = c["ua"]
        if c["feature"]:
            attributes["apiusage.feature"] = c["feature"]
        add_span(scope, attributes, start_ns=end_ns - 5_000_000, end_ns=end_ns)
    return req.SerializeToString()


def send(http_endpoint: str, batch: list[dict], chunk: int = 100) -> None:
    for i in range(0, len(batch), chunk):
        req = urllib.request.Request(
            f"{http_endpoint}/v1/traces",
            data=request(batch[i : i + chunk]),
            headers={"Content-Type": "application/x-protobuf"},
        )
        with urllib.request.urlopen(req, timeout=10) as response:
            assert response.status == 200


def week_of(day: int) -> int:
    return (day + 3) // 7  # Monday-based (1970-01-01 was a Thursday)


def expected_cohorts() -> dict[tuple[str, str], float]:
    """Cohort retention straight from the script: first week of each consumer, weeks active."""
    weeks: dict[str, set[int]] = {}
    for c in calls():
        weeks.setdefault(c["consumer"], set()).add(week_of(c["at"] // DAY_MS))
    this_week = week_of(TODAY)
    cohorts: dict[int, list[set[int]]] = {}
    for active in weeks.values():
        cohorts.setdefault(min(active), []).append(active)
    out = {}
    for cohort, members in cohorts.items():
        label = (dt.date(1970, 1, 1) + dt.timedelta(days=cohort * 7 - 3)).isoformat()
        for since in range(this_week - cohort + 1):
            active = sum(1 for weeks_active in members if cohort + since in weeks_active)
            out[label, str(since)] = active / len(members)
    return out


def processor_config(tmp_path, state: dict | None = None) -> dict:
    """Catalog and plan lookup files in tmp_path; flush and refresh only when the test says."""
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    (tmp_path / "plans.csv").write_text(PLANS_CSV)
    return {
        "catalog": str(tmp_path / "catalog.yaml"),
        "processors": {"plan_lookup": {"file": str(tmp_path / "plans.csv")}},
        "state": {"refresh_interval": "1h", "flush_interval": "1h", **(state or {})},
    }


SPANS = len(calls())


def sunset_timestamp() -> float:
    return dt.datetime(2027, 1, 31, tzinfo=dt.timezone.utc).timestamp()
