"""`apiusage release-notes` against a real Prometheus holding the scripted release history of
release_history.py (backfilled with `promtool tsdb create-blocks-from openmetrics`), so every
figure is exact."""

from __future__ import annotations

import datetime as dt
import subprocess
import time

import pytest
from apiusage.report.build import PrometheusClient
from apiusage.report.release_notes import _code, _text, release_notes
from release_history import END, SERVICE, START, T0, T1, backfilled_prometheus, history

from tests.support.components import free_port
from tests.support.processor import apiusage_command


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> str:
    with backfilled_prometheus(tmp_path_factory.mktemp("relnotes"), history()) as url:
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
