"""Synthetic series of the API design families (issue 15), for the tests of the rules' readers.

Until the processor derives these families from spans, the live dashboard test scrapes them
from `Exposition` (a Prometheus text endpoint on loopback whose counters grow at fixed rates)
and the report test backfills them with `openmetrics` into a real Prometheus. Every counter is
`rate * seconds since start`, every histogram observes a fixed mix of values, so what
Prometheus answers is known exactly.

The labels are the demo's (service orders-api, its routes), so that ratios against
api_requests_total from the demo traffic have both sides.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.components import missing

SERVICE = "orders-api"
LIST, CREATE, SEARCH = ("GET", "/v2/orders"), ("POST", "/v2/orders"), ("GET", "/v2/search")
SIZE_BUCKETS = (256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Counter:
    name: str
    labels: dict[str, str]
    rate: float  # per second


@dataclass(frozen=True)
class Gauge:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Histogram:
    name: str
    labels: dict[str, str]
    rate: float  # observations per second
    mix: tuple[tuple[float, float], ...]  # (observed value, share of the observations)
    buckets: tuple[float, ...]


def _route(method_route: tuple[str, str]) -> dict[str, str]:
    return {"service": SERVICE, "method": method_route[0], "route": method_route[1]}


def _windows(name: str, labels: dict[str, str], by_window: tuple[float, float, float]) -> list[Gauge]:
    return [
        Gauge(name, {**labels, "window": w}, v) for w, v in zip(("1d", "7d", "30d"), by_window, strict=True)
    ]


def families() -> list[Counter | Gauge | Histogram]:
    """The series, one rate or value each (the report test's exact expectations follow from these)."""
    out: list[Counter | Gauge | Histogram] = []
    # Parameters: GET /v2/orders carries limit on 60 % of the requests, status on 25 %; POST
    # carries its body fields.
    for (mr, location, parameter), rate, consumers in (
        ((LIST, "query", "limit"), 0.6, (3, 5, 8)),
        ((LIST, "query", "status"), 0.25, (1, 2, 3)),
        ((CREATE, "body", "items"), 0.5, (4, 6, 9)),
        ((CREATE, "body", "coupon"), 0.05, (0, 1, 2)),
    ):
        labels = {**_route(mr), "location": location, "parameter": parameter}
        out.append(Counter("api_parameter_requests_total", labels, rate))
        out += _windows("api_parameter_consumers", labels, consumers)
    out += [
        Gauge("api_unused_parameters", _route(LIST), 2),
        Gauge("api_unused_parameters", _route(CREATE), 1),
        Gauge("api_unused_parameters", _route(SEARCH), 0),
    ]
    # Validation errors: quantity is what clients get wrong.
    for (mr, location, field, error_type), rate in (
        ((CREATE, "body", "items.quantity", "int_parsing"), 0.2),
        ((CREATE, "body", "items", "missing"), 0.05),
        ((LIST, "query", "limit", "less_than_equal"), 0.1),
    ):
        labels = {**_route(mr), "location": location, "field": field, "error_type": error_type}
        out.append(Counter("api_validation_errors_total", labels, rate))
    out.append(Counter("api_errors_total", {**_route(SEARCH), "error_type": "TimeoutError"}, 0.02))
    # Client libraries on the same endpoint: orders-sdk-js gets 20 % 4xx on POST, the others 2 %.
    for client, mr, ok, bad in (
        ("orders-sdk-js", CREATE, 0.8, 0.2),
        ("orders-sdk-py", CREATE, 0.98, 0.02),
        ("orders-sdk-go", CREATE, 0.98, 0.02),
        ("orders-sdk-js", LIST, 1.0, 0.01),
        ("orders-sdk-py", LIST, 1.0, 0.01),
    ):
        for status_class, rate in (("2xx", ok), ("4xx", bad)):
            labels = {"service": SERVICE, "client_name": client, "method": mr[0], "route": mr[1]}
            labels["status_class"] = status_class
            out.append(Counter("api_client_endpoint_requests_total", labels, rate))
    # Payload sizes (no quantile falls on a bucket bound, where float rounding picks the bucket).
    for family, mr, mix in (
        ("api_request_body_size_bytes", CREATE, ((200.0, 0.4), (800.0, 0.4), (3000.0, 0.2))),
        ("api_response_body_size_bytes", LIST, ((1500.0, 0.5), (3000.0, 0.3), (50000.0, 0.2))),
        ("api_response_body_size_bytes", CREATE, ((300.0, 1.0),)),
    ):
        out.append(Histogram(family, _route(mr), 1.0, mix, SIZE_BUCKETS))
    # Regions: most consumers in DE and US, answered from eu-west-1 and us-east-1.
    for client_region, server_region, ok, bad, latency in (
        ("DE", "eu-west-1", 1.9, 0.1, ((0.02, 0.8), (0.2, 0.2))),
        ("US", "us-east-1", 0.95, 0.05, ((0.03, 0.8), (0.4, 0.2))),
        ("BR", "us-east-1", 0.2, 0.05, ((0.2, 0.5), (0.8, 0.5))),
    ):
        for status_class, rate in (("2xx", ok), ("4xx", bad)):
            labels = {
                "service": SERVICE,
                "client_region": client_region,
                "server_region": server_region,
                "status_class": status_class,
            }
            out.append(Counter("api_region_requests_total", labels, rate))
        out.append(
            Histogram(
                "api_region_request_duration_seconds",
                {"service": SERVICE, "client_region": client_region},
                ok + bad,
                latency,
                DURATION_BUCKETS,
            )
        )
    # Feedback: about the checkout (scores 2 and 4) and the whole API (5).
    for route, category, score, rate in (
        ("/v2/orders", "docs", "2", 0.02),
        ("/v2/orders", "errors", "4", 0.06),
        ("", "general", "5", 0.01),
    ):
        labels = {"service": SERVICE, "route": route, "category": category, "score": score}
        out.append(Counter("api_feedback_total", labels, rate))
    out += _windows("api_feedback_consumers", {"service": SERVICE}, (2, 4, 6))
    return out


def _labels(labels: dict[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


Series = Counter | Gauge | Histogram


def samples(seconds: float, extra: tuple[Series, ...] = ()) -> list[tuple[str, str, float]]:
    """(family, series text, value) of every series (and `extra`) `seconds` after the start."""
    out = []
    for f in (*families(), *extra):
        if isinstance(f, Gauge):
            out.append((f.name, f.name + _labels(f.labels), float(f.value)))
        elif isinstance(f, Counter):
            out.append((f.name, f.name + _labels(f.labels), f.rate * seconds))
        else:
            n = f.rate * seconds
            for le in (*f.buckets, float("inf")):
                share = sum(s for v, s in f.mix if v <= le)
                labels = {**f.labels, "le": _bound(le)}
                out.append((f.name, f"{f.name}_bucket{_labels(labels)}", n * share))
            out.append((f.name, f"{f.name}_sum{_labels(f.labels)}", n * sum(v * s for v, s in f.mix)))
            out.append((f.name, f"{f.name}_count{_labels(f.labels)}", n))
    return out


def _types() -> dict[str, str]:
    return {
        f.name: "gauge" if isinstance(f, Gauge) else "counter" if isinstance(f, Counter) else "histogram"
        for f in families()
    }


def text(seconds: float) -> str:
    """The Prometheus text exposition `seconds` after the start."""
    types, grouped = _types(), {}
    for family, series, value in samples(seconds):  # a family's series together, as the format wants
        grouped.setdefault(family, [f"# TYPE {family} {types[family]}"]).append(f"{series} {value!r}")
    return "\n".join(line for lines in grouped.values() for line in lines) + "\n"


def openmetrics(start: float, end: float, step: float, extra: tuple[Series, ...] = ()) -> str:
    """An OpenMetrics text of every series from `start` to `end` (unix seconds) every `step`
    seconds, for `promtool tsdb create-blocks-from openmetrics` (counters start at 0 at `start`).
    No TYPE lines: the TSDB keeps samples, not types, and the parser wants no `_total` there."""
    by_series: dict[str, list[str]] = {}
    n = 0
    while start + n * step <= end + 1e-9:
        t = start + n * step
        for _, series, value in samples(t - start, extra):
            by_series.setdefault(series, []).append(f"{series} {value!r} {t:.3f}")
        n += 1
    lines = [row for rows in by_series.values() for row in rows]  # a series' samples together
    return "\n".join([*lines, "# EOF"]) + "\n"


def backfill(data: Path, start: float, end: float, step: float, extra: tuple[Series, ...] = ()) -> None:
    """Write the series from `start` to `end` as TSDB blocks into the Prometheus data folder `data`
    (`promtool tsdb create-blocks-from openmetrics`); a Prometheus started on it serves them."""
    promtool = shutil.which("promtool")
    if promtool is None:
        missing("promtool (Debian package prometheus)")
    data.mkdir(parents=True, exist_ok=True)
    source = data.parent / "design.om"
    source.write_text(openmetrics(start, end, step, extra), encoding="utf-8")
    run = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    source.unlink()


REQUESTS = tuple(
    Counter(
        "api_requests_total",
        {
            "service": SERVICE,
            "method": method,
            "route": route,
            "status_code": "200",
            "plan_tier": "pro",
            "deprecated": "false",
        },
        rate,
    )
    for (method, route), rate in ((LIST, 2.0), (CREATE, 1.0), (SEARCH, 0.5))
)
"""Requests to the endpoints the design series are about (2, 1 and 0.5 a second), for the
backfilled tests; the live one has the demo's."""


class Exposition:
    """A loopback /metrics endpoint serving `text(seconds since it started)`."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = text(time.monotonic() - owner.started).encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.target = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Exposition:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
