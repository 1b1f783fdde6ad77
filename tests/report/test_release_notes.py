"""`apiusage release-notes` against a real Prometheus holding a scripted release history,
backfilled with `promtool tsdb create-blocks-from openmetrics`, so every figure is exact.

orders-api ran 1.3.0 for 2 hours (a trickle), 1.4.2 for a day, then 1.5.0 for a day: 1.5.0
answers POST /v2/orders with 10 % 5xx instead of 1 %, is slower, and came with a new client
(orders-sdk-go) taking a fifth of the traffic. billing-api released 2.0.0 an hour after
1.5.0: another service's release must not cut orders-api's windows.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from dataclasses import dataclass

import pytest
from apiusage.report.build import PrometheusClient
from apiusage.report.release_notes import _code, _text, release_notes

from tests.support.components import free_port
from tests.support.processor import apiusage_command
from tests.support.prometheus import promtool, start_prometheus

HOUR, DAY, STEP = 3600, 86400, 60
# The history ends on the last full hour, so that the times on the page are round.
END = float(int(time.time()) // HOUR * HOUR)
T0 = END - 2 * DAY  # 1.4.2 first seen
T1 = END - DAY  # 1.5.0 first seen
START = T0 - 2 * HOUR  # 1.3.0 first seen
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
            T1 + HOUR,
            T1 + HOUR,
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


def _openmetrics(series: list[Counter | Gauge]) -> str:
    def labels(d: dict[str, str]) -> str:
        return "{" + ",".join(f'{k}="{v}"' for k, v in d.items()) + "}"

    lines = []
    for s in series:
        name = s.name + labels(s.labels)
        t = s.since
        while t <= END + 1e-9:
            lines.append(f"{name} {s.value(t)!r} {t:.3f}")
            t += STEP
    return "\n".join([*lines, "# EOF"]) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("relnotes")
    data = tmp / "prometheus" / "data"
    data.mkdir(parents=True)
    source = tmp / "history.om"
    source.write_text(_openmetrics(history()), encoding="utf-8")
    run = subprocess.run(
        [promtool(), "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with start_prometheus(tmp, "global:\n  scrape_interval: 15s\n") as url:
        yield url


def _notes(prometheus: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*apiusage_command(), "release-notes", "--prometheus", prometheus, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@pytest.mark.slow
def test_release_notes_compare_with_the_release_before(prometheus):
    run = _notes(prometheus, "--service", "orders-api", "--version", "1.5.0")
    assert (run.returncode, run.stderr) == (0, "")
    # 1.4.2: 1.701 requests a second over the day (1,501 by version + ...: see history()).
    assert run.stdout.splitlines() == [
        "# orders-api 1.5.0",
        "",
        f"- First seen: {_when(T1)}",
        f"- Compared with: 1.4.2, first seen {_when(T0)}",
        f"- 1.5.0: {_when(T1)} to {_when(END)}",
        f"- 1.4.2: {_when(T0)} to {_when(T1)}",
        "",
        "## Traffic and reliability",
        "",
        "| | 1.4.2 | 1.5.0 | Change |",
        "|---|---:|---:|---:|",
        # 1.701/s x 86,400 s; 1.4.2's search adds 0.001/s, 1.5.0's too (half of it 5xx).
        "| Requests | 146,966 | 146,966 | +0.0% |",
        "| Requests per hour | 6,124 | 6,124 | +0.0% |",
        # 5xx: (0.01 + 0.005) / 1.701 = 0.88 %; (0.01 + 0.05 + 0.0005) / 1.701 = 3.56 %.
        "| Error ratio (5xx) | 0.88% | 3.56% | +2.67 pp |",
        "| 4xx ratio | 1.18% | 1.18% | +0.00 pp |",
        # p95 of 90 % at 20 ms, 10 % at 200 ms: 100 + 150 x 0.5 = 175 ms; of 70 % / 30 % at 400 ms:
        # 250 + 250 x 0.25 / 0.3 = 458 ms.
        "| p95 latency | 175 ms | 458 ms | +161.9% |",
        "",
        "## Client mix",
        "",
        "Share of the service's requests by client, 1 day before 1.5.0 was first seen and 1 day after.",
        "",
        "| Client | Before | After | Change |",
        "|---|---:|---:|---:|",
        "| `orders-sdk-py` | 60.0% | 40.0% | -20.0 pp |",
        "| `orders-sdk-js` | 30.0% | 30.0% | +0.0 pp |",
        "| `orders-sdk-go` | 0.0% | 20.0% | +20.0 pp |",
        "| `orders-cli` | 10.0% | 10.0% | +0.0 pp |",
        "",
        "## Endpoints whose behaviour changed",
        "",
        "Endpoints with at least 100 requests in each release whose 5xx or 4xx ratio moved by 1 percentage "
        "point or more (by version), or whose p95 moved by 20% or more (1 day before and after 1.5.0 was "
        "first seen).",
        "",
        "| Endpoint | Requests 1.4.2 | Requests 1.5.0 | 5xx ratio | 4xx ratio | p95 |",
        "|---|---:|---:|---|---|---|",
        # 0.005/0.5 -> 0.05/0.5; p95 175 -> 458 ms as above.
        "| `POST /v2/orders` | 43,200 | 43,200 | 1.00% → 10.00% | 0.00% → 0.00% | 175 ms → 458 ms |",
        # All at 20 ms then all at 40 ms: p95 = 10 + 15 x 0.95 = 24 ms, then 25 + 25 x 0.95 = 49 ms.
        "| `GET /v2/orders/{order_id}` | 17,280 | 17,280 | 0.00% → 0.00% | 0.00% → 0.00% | 24 ms → 49 ms |",
        "",
        "## Deprecated endpoints still called",
        "",
        "Endpoints marked deprecated that were called in the 1 day after 1.5.0 was first seen.",
        "",
        "| Endpoint | Requests after | Requests before | Clients after |",
        "|---|---:|---:|---|",
        "| `DELETE /v1/orders/{order_id}` | 864 | 864 | `orders-cli` (691), `orders-sdk-py` (173) |",
    ]


@pytest.mark.slow
def test_release_notes_against_an_explicit_release(prometheus):
    """The same as the default, named; and against 1.3.0, whose 36 requests say nothing."""
    default = _notes(prometheus, "--service", "orders-api", "--version", "1.5.0")
    named = _notes(prometheus, "--service", "orders-api", "--version", "1.5.0", "--against", "1.4.2")
    assert (named.returncode, named.stderr, named.stdout) == (0, "", default.stdout)

    run = _notes(prometheus, "--service", "orders-api", "--version", "1.5.0", "--against", "1.3.0")
    assert (run.returncode, run.stderr) == (0, "")
    lines = run.stdout.splitlines()
    # 1.3.0 lived 2 hours before 1.4.2 replaced it: its window is those 2 hours.
    assert lines[:6] == [
        "# orders-api 1.5.0",
        "",
        f"- First seen: {_when(T1)}",
        f"- Compared with: 1.3.0, first seen {_when(START)}",
        f"- 1.5.0: {_when(T1)} to {_when(END)}",
        f"- 1.3.0: {_when(START)} to {_when(T0)}",
    ]
    start = lines.index("## Traffic and reliability")
    assert lines[start : lines.index("## Client mix")] == [
        "## Traffic and reliability",
        "",
        "| | 1.3.0 | 1.5.0 | Change |",
        "|---|---:|---:|---:|",
        # 0.005 a second for 2 hours; totals over 2 hours and a day do not compare.
        "| Requests | 36 | 146,966 | - |",
        "| Requests per hour | 18 | 6,124 | +33920.0% |",
        "| Error ratio (5xx) | - | 3.56% | - |",
        "| 4xx ratio | - | 1.18% | - |",
        "| p95 latency | - | 458 ms | - |",
        "",
        "1.3.0 served 36 requests in its window, fewer than 100: too little traffic for its ratios and p95 "
        "to mean anything.",
        "",
    ]
    changes = lines.index("## Endpoints whose behaviour changed")
    assert lines[changes + 3 : changes + 6] == ["", "Not compared: too little traffic (see above).", ""]


@pytest.mark.slow
def test_a_release_younger_than_a_day_and_without_traffic(prometheus):
    run = _notes(prometheus, "--service", "billing-api", "--version", "2.0.0")
    assert (run.returncode, run.stderr) == (0, "")
    lines = run.stdout.splitlines()
    assert lines[6].startswith("- 2.0.0 has been seen for 2") and lines[6].endswith(
        " hours (before it was replaced or until now), not a full day: each window is that long"
    )
    assert "| Requests | 0 | 0 | - |" in lines
    assert "| Error ratio (5xx) | - | - | - |" in lines
    assert (
        "2.0.0 served 0 requests in its window, fewer than 100: too little traffic for its ratios and p95 "
        "to mean anything." in lines
    )
    assert "| `billing-cli` | 100.0% | 100.0% | +0.0 pp |" in lines


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--service", "orders-api", "--version", "1.6.0"),
            "no release 1.6.0 of orders-api in Prometheus (known: 1.3.0, 1.4.2, 1.5.0)",
        ),
        (
            ("--service", "orders-api", "--version", "1.5.0", "--against", "0.1"),
            "no release 0.1 of orders-api in Prometheus (known: 1.3.0, 1.4.2, 1.5.0)",
        ),
        (
            ("--service", "orders-api", "--version", "1.5.0", "--against", "1.5.0"),
            "--against 1.5.0 is the release itself: name another one",
        ),
        (
            ("--service", "orders-api", "--version", "1.3.0"),
            "orders-api 1.3.0 is the first release Prometheus knows: nothing to compare it with "
            "(name one with --against)",
        ),
        (
            ("--service", "payments-api", "--version", "1.0"),
            "Prometheus knows no release of payments-api (in the last 30d)",
        ),
        (("--service", " ", "--version", "1.5.0"), "--service is empty"),
        (("--service", "orders-api", "--version", "1.5.0", "--against", ""), "--against is empty"),
        # Quotes, backslashes and control characters reach PromQL escaped and the message visible.
        (
            ("--service", 'orders-api"} or vector(1) #\\', "--version", "1"),
            'Prometheus knows no release of orders-api"} or vector(1) #\\ (in the last 30d)',
        ),
        (
            ("--service", "orders-api", "--version", "1.5.0\n\x1b[31m"),
            "no release 1.5.0\\x0a\\x1b[31m of orders-api in Prometheus (known: 1.3.0, 1.4.2, 1.5.0)",
        ),
    ],
)
def test_missing_data_is_one_line_and_exit_1(prometheus, args, message):
    run = _notes(prometheus, *args)
    assert (run.returncode, run.stdout, run.stderr) == (1, "", f"apiusage: {message}\n")


def test_no_prometheus_is_one_line_and_exit_2():
    url = f"http://127.0.0.1:{free_port()}"
    run = _notes(url, "--service", "orders-api", "--version", "1.5.0")
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr == (
        f"apiusage: cannot reach Prometheus at {url}: [Errno 111] Connection refused "
        "(set --prometheus to its URL)\n"
    )


def test_a_prometheus_that_refuses_a_query_is_one_line_and_exit_2(tmp_path):
    """Not Prometheus at all: a server answering 404 to every query, after a good build info."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ok = self.path.startswith("/api/v1/status/buildinfo")
            body = b'{"status": "success", "data": {}}' if ok else b'{"status": "error", "error": "no"}'
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        run = _notes(url, "--service", "orders-api", "--version", "1.5.0")
    finally:
        server.shutdown()
        server.server_close()
    assert (run.returncode, run.stdout) == (2, "")
    assert run.stderr.startswith(
        f"apiusage: Prometheus at {url} refused 'min by (service, version) (last_over_time("
    )
    assert run.stderr.endswith(": no\n") and run.stderr.count("\n") == 1


def test_label_values_cannot_break_the_markdown():
    assert _text("1.5.0-rc_1 <b>") == "1.5.0-rc\\_1 \\<b\\>"
    assert _code("GET /a|b") == "`GET /a\\|b`"
    assert _code("x`y") == "``x`y``"
    assert _code("`x") == "`` `x ``"
    assert _code("a\nb\x00") == "`a\\x0ab\\x00`"


class _Crowd(PrometheusClient):
    """100,000 routes, clients and deprecated endpoints, all of them changed: the page stays short."""

    N = 100_000

    def __init__(self) -> None:
        super().__init__("http://prometheus.invalid")

    def query(self, expr: str, at: float) -> list[tuple[dict, float]]:
        n = range(self.N)
        if "first_seen" in expr:
            return [
                ({**SERVICE, "version": v}, t) for v, t in (("1.4.2", T0), ("1.5.0", T1), ("__other__", T1))
            ]
        if "histogram_quantile" in expr:
            p95 = 0.1 if at <= T1 else 0.3
            return (
                [({"method": "GET", "route": f"/r/{i}"}, p95) for i in n] if "route" in expr else [({}, p95)]
            )
        if "api_release_requests_total" in expr:
            bad = 10.0 if '"1.5.0"' in expr else 1.0
            return [
                ({"method": "GET", "route": f"/r/{i}|`x`", "status_class": c}, v)
                for i in n
                for c, v in (("2xx", 100.0), ("5xx", bad))
            ]
        if "api_request_duration_seconds_count" in expr:
            return [({"method": "GET", "route": f"/r/{i}"}, 200.0) for i in n]
        if "api_client_requests_total" in expr:
            return [({"client_name": f"c{i}\n<b>"}, float(i % 7)) for i in n]
        if "api_deprecated_requests_total" in expr:
            return [
                ({"method": "GET", "route": f"/old/{i}", "client_name": f"c{j}"}, 1.0)
                for i in n
                for j in (1, 2)
            ]
        if "api_requests_total" in expr:
            return [({"method": "GET", "route": f"/old/{i}"}, 2.0) for i in n]
        raise AssertionError(expr)


@pytest.mark.slow
def test_100000_distinct_values_make_a_bounded_page():
    started = time.monotonic()
    page = release_notes(_Crowd(), "orders-api", "1.5.0", None, END)
    assert time.monotonic() - started < 60
    lines = page.splitlines()
    assert len(lines) < 100, len(lines)
    # 100,000 changed endpoints and 100,000 deprecated ones: 20 rows each, the rest counted.
    assert lines.count("And 99980 more.") == 2
    assert "| 85709 other clients | 100.0% | 100.0% | +0.0 pp |" in lines  # 1 in 7 clients made no call
    assert "| `c1000\\x0a<b>` | 0.0% | 0.0% | +0.0 pp |" in lines
    assert "| `` GET /r/0\\|`x` `` | 101 | 110 | 0.99% → 9.09% | 0.00% → 0.00% | - → - |" in lines
    assert "| `GET /old/0` | 2 | 2 | `c1` (1), `c2` (1) |" in lines
