"""A scripted release history for a real Prometheus, backfilled with `promtool tsdb
create-blocks-from openmetrics` so every figure the release notes and the report's Releases
section print is exact; and the helpers that write such histories (segments of constant rate).

orders-api ran 1.3.0 for 2 hours (a trickle), 1.4.2 for a day, then 1.5.0 for a day: 1.5.0
answers POST /v2/orders with 10 % 5xx instead of 1 %, is slower, and came with a new client
(orders-sdk-go) taking a fifth of the traffic. billing-api released 2.0.0 two hours after
1.5.0: another service's release must not cut orders-api's windows.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.prometheus import promtool, start_prometheus

HOUR, DAY, STEP = 3600, 86400, 60
# The history ends on the last full hour, so that the times on the page are round.
END = float(int(time.time()) // HOUR * HOUR)
T0 = END - 2 * DAY  # 1.4.2 first seen
T1 = END - DAY  # 1.5.0 first seen
START = T0 - 2 * HOUR  # 1.3.0 first seen
# billing-api 2.0.0 first seen: 22 hours before END, so a command run with the real clock up to two
# hours after this module is imported (a slow suite) still finds it younger than a day.
BILLING_2 = T1 + 2 * HOUR
FOREVER = (START, END)
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SERVICE = {"service": "orders-api"}


@dataclass(frozen=True)
class Counter:
    name: str
    labels: dict[str, str]
    segments: tuple[tuple[float, float, float], ...]  # (from, to, rate per second)
    since: float  # the series exists (at 0) from here to END

    def value(self, t: float) -> float:
        return sum(rate * max(0.0, min(t, b) - a) for a, b, rate in self.segments)


@dataclass(frozen=True)
class Gauge:
    name: str
    labels: dict[str, str]
    value_: float
    since: float

    def value(self, t: float) -> float:
        return self.value_


def counter(name: str, labels: dict[str, str], *segments: tuple[float, float, float]) -> Counter:
    return Counter(name, labels, segments, min(a for a, _, _ in segments))


def histogram(
    name: str, labels: dict[str, str], *segments: tuple[float, float, float, tuple[tuple[float, float], ...]]
) -> list[Counter]:
    """Bucket, _sum and _count counters of a histogram observing `mix` ((value, share), ...) at `rate`."""
    out = []
    for le in (*BUCKETS, float("inf")):
        bound = "+Inf" if le == float("inf") else repr(le)
        out.append(
            counter(
                f"{name}_bucket",
                {**labels, "le": bound},
                *((a, b, r * sum(s for v, s in mix if v <= le)) for a, b, r, mix in segments),
            )
        )
    out.append(
        counter(f"{name}_sum", labels, *((a, b, r * sum(v * s for v, s in mix)) for a, b, r, mix in segments))
    )
    out.append(counter(f"{name}_count", labels, *((a, b, r) for a, b, r, _ in segments)))
    return out


def _release(version: str, since: float, until: float, routes: dict) -> list[Counter | Gauge]:
    out: list[Counter | Gauge] = []
    for (method, route), by_class in routes.items():
        for status_class, rate in by_class.items():
            labels = {**SERVICE, "version": version, "method": method, "route": route}
            out.append(
                counter(
                    "api_release_requests_total",
                    {**labels, "status_class": status_class},
                    (since, until, rate),
                )
            )
    return out


FAST, SLOW = ((0.02, 0.9), (0.2, 0.1)), ((0.02, 0.7), (0.4, 0.3))
GET, POST, SEARCH, ITEM = (
    ("GET", "/v2/orders"),
    ("POST", "/v2/orders"),
    ("GET", "/v2/search"),
    (
        "GET",
        "/v2/orders/{order_id}",
    ),
)


def history() -> list[Counter | Gauge]:
    out: list[Counter | Gauge] = [
        Gauge("api_release_first_seen_timestamp_seconds", {**SERVICE, "version": "1.3.0"}, START, START),
        Gauge("api_release_first_seen_timestamp_seconds", {**SERVICE, "version": "1.4.2"}, T0, T0),
        Gauge("api_release_first_seen_timestamp_seconds", {**SERVICE, "version": "1.5.0"}, T1, T1),
        Gauge(
            "api_release_first_seen_timestamp_seconds",
            {"service": "billing-api", "version": "2.0.0"},
            BILLING_2,
            BILLING_2,
        ),
        Gauge(
            "api_release_first_seen_timestamp_seconds",
            {"service": "billing-api", "version": "1.9.0"},
            START,
            START,
        ),
        Gauge("api_release_rank", {**SERVICE, "version": "1.5.0"}, 0, T1),
        Gauge("api_release_rank", {**SERVICE, "version": "1.4.2"}, 1, T1),
        Gauge("api_release_rank", {**SERVICE, "version": "1.3.0"}, 2, T1),
    ]
    out += _release("1.3.0", START, T0, {GET: {"2xx": 0.005}})
    # 1.4.2: 1.501 requests a second, 1 % 5xx on both /v2/orders endpoints.
    out += _release(
        "1.4.2",
        T0,
        T1,
        {
            GET: {"2xx": 0.97, "4xx": 0.02, "5xx": 0.01},
            POST: {"2xx": 0.495, "5xx": 0.005},
            ITEM: {"2xx": 0.2},
            SEARCH: {"2xx": 0.001},
        },
    )
    # 1.5.0: POST /v2/orders at 10 % 5xx; GET /v2/search at 50 % but with 86 requests (guarded).
    out += _release(
        "1.5.0",
        T1,
        END,
        {
            GET: {"2xx": 0.97, "4xx": 0.02, "5xx": 0.01},
            POST: {"2xx": 0.45, "5xx": 0.05},
            ITEM: {"2xx": 0.2},
            SEARCH: {"2xx": 0.0005, "5xx": 0.0005},
        },
    )
    for version, since, until, mix in (
        ("1.3.0", START, T0, FAST),
        ("1.4.2", T0, T1, FAST),
        ("1.5.0", T1, END, SLOW),
    ):
        rate = 0.005 if version == "1.3.0" else 1.701
        out += histogram(
            "api_release_request_duration_seconds", {**SERVICE, "version": version}, (since, until, rate, mix)
        )
    # Latency per route (no version label): POST and the item endpoint slow down at T1.
    for (method, route), rate, before, after in (
        (GET, 1.0, FAST, FAST),
        (POST, 0.5, FAST, SLOW),
        (ITEM, 0.2, ((0.02, 1.0),), ((0.04, 1.0),)),
        (SEARCH, 0.001, FAST, SLOW),
    ):
        labels = {**SERVICE, "method": method, "route": route, "plan_tier": "pro"}
        out += histogram(
            "api_request_duration_seconds", labels, (START, T1, rate, before), (T1, END, rate, after)
        )
    # The client mix: py 60 % -> 40 %, js 30 %, cli 10 %, go 0 -> 20 %.
    for client, before, after in (
        ("orders-sdk-py", 0.6, 0.4),
        ("orders-sdk-js", 0.3, 0.3),
        ("orders-cli", 0.1, 0.1),
        ("orders-sdk-go", 0.0, 0.2),
    ):
        labels = {**SERVICE, "client_name": client, "client_version": "1.0.0", "status_class": "2xx"}
        out.append(counter("api_client_requests_total", labels, (START, T1, before), (T1, END, after)))
    out.append(
        counter(
            "api_client_requests_total",
            {
                "service": "billing-api",
                "client_name": "billing-cli",
                "client_version": "1",
                "status_class": "2xx",
            },
            (START, END, 5.0),
        )
    )
    # Deprecated endpoints: DELETE /v1/orders/{order_id} still called; GET /v1/orders no longer.
    for (method, route), before, after, clients in (
        (("DELETE", "/v1/orders/{order_id}"), 0.01, 0.01, {"orders-cli": 0.8, "orders-sdk-py": 0.2}),
        (("GET", "/v1/orders"), 0.02, 0.0, {"orders-sdk-js": 1.0}),
    ):
        labels = {**SERVICE, "method": method, "route": route, "plan_tier": "free"}
        out.append(
            counter(
                "api_requests_total",
                {**labels, "status_code": "200", "deprecated": "true"},
                (START, T1, before),
                (T1, END, after),
            )
        )
        for client, share in clients.items():
            out.append(
                counter(
                    "api_deprecated_requests_total",
                    {**labels, "client_name": client, "client_version": "0.9.1"},
                    (START, T1, before * share),
                    (T1, END, after * share),
                )
            )
    out.append(
        counter(
            "api_requests_total",
            {**SERVICE, "method": "GET", "route": "/v2/orders", "status_code": "200", "plan_tier": "pro"}
            | {"deprecated": "false"},
            (START, END, 1.0),
        )
    )
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics(series: Sequence[Counter | Gauge], end: float = END) -> str:
    """Every series sampled each STEP from its start to `end`, as OpenMetrics text."""

    def labels(d: dict[str, str]) -> str:
        return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in d.items()) + "}"

    lines = []
    for s in series:
        name = s.name + labels(s.labels)
        t = s.since
        while t <= end + 1e-9:
            lines.append(f"{name} {s.value(t)!r} {t:.3f}")
            t += STEP
    return "\n".join([*lines, "# EOF"]) + "\n"


@contextlib.contextmanager
def backfilled_prometheus(tmp: Path, series: Sequence[Counter | Gauge], end: float = END) -> Iterator[str]:
    """A real Prometheus holding `series` (backfilled), at its base URL."""
    data = tmp / "prometheus" / "data"
    data.mkdir(parents=True)
    source = tmp / "history.om"
    source.write_text(openmetrics(series, end), encoding="utf-8")
    run = subprocess.run(
        [promtool(), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with start_prometheus(tmp, "global:\n  scrape_interval: 15s\n") as url:
        yield url
