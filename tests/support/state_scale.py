"""Twenty thousand consumers' month of history, sent over OTLP/HTTP as a real exporter would, with
the exact consumer counts it must produce.

Every call ends `days_ago` days and 12 hours before NOW (the moment the history is built), so each
one is at least 12 hours away from the edge of every window (1d, 7d, 30d, counted back from the
refresh a few seconds later): a window holds a call exactly when `days_ago < window days`.
"""

from __future__ import annotations

import http.client
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from apiusage.demo.otlp import ExportTraceServiceRequest, Span, add_resource, add_span, key_value

DAY_MS = 86_400_000
SERVICE = "scale-api"
PLANS = ("free", "pro", "enterprise")
# (method, route, feature); "" sends no apiusage.feature
ENDPOINTS = (
    ("GET", "/v1/orders", "orders"),
    ("POST", "/v1/orders", "orders"),
    ("GET", "/v1/orders/{order_id}", "orders"),
    ("DELETE", "/v1/orders/{order_id}", "orders"),
    ("GET", "/v1/invoices", "billing"),
    ("POST", "/v1/payments", "billing"),
    ("GET", "/v1/reports", "reports"),
    ("GET", "/v1/me", ""),
)
CLIENT = "scale-sdk"
WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
DAYS = 30


@dataclass
class Expected:
    """The counts the processor must report, from what was sent."""

    spans: int = 0
    activity_rows: int = 0  # distinct (day, consumer, endpoint): what the store writes
    new: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # plan -> consumers
    active: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # plan, window
    endpoint: dict[tuple[str, str, str], int] = field(default_factory=lambda: defaultdict(int))
    feature: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    client: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))


def _mix(i: int) -> int:
    # Knuth's multiplicative hash: plan and version independent of the day pattern (i % 30)
    return i * 2654435761 % (1 << 32)


def _plan(i: int) -> str:
    return PLANS[_mix(i) % 3]


def _version(i: int) -> str:
    return f"1.{(_mix(i) >> 8) % 4}.0"


class History:
    """Consumers (ids s000000 …), each calling 2-9 times over the last 30 days.

    Consumer i: plan `_plan(i)` (every span), client version `_version(i)`, newest call
    `i % 30` days ago, then one every `1 + i // 30 % 3` days back while inside the 30 days, at
    most `2 + i // 90 % 8` calls; call j goes to ENDPOINTS[(i + 3 j) % 8] and fails (503) when
    `(i + j) % 7 == 0` (a failed call is a call: it counts in every family)."""

    def __init__(self, consumers: int | Iterable[int] = 20_000, now_ms: int | None = None) -> None:
        """`consumers`: how many (ids 0 …), or which ids (a part of a history, or what a store
        holds of it, with the first part's `now_ms`)."""
        self.ids = range(consumers) if isinstance(consumers, int) else sorted(consumers)
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms

    def part(self, ids: Iterable[int]) -> History:
        return History(ids, self.now_ms)

    @staticmethod
    def index(consumer_id: str) -> int:
        """The index of a consumer id of this history (s000042 -> 42)."""
        return int(consumer_id.removeprefix("s"))

    def calls(self, i: int) -> Iterator[tuple[int, int, int]]:
        """(days_ago, endpoint index, status) of consumer i's calls."""
        newest, step, count = i % DAYS, 1 + i // 30 % 3, 2 + i // 90 % 8
        for j in range(count):
            days_ago = newest + j * step
            if days_ago >= DAYS:
                return
            yield days_ago, (i + 3 * j) % len(ENDPOINTS), 503 if (i + j) % 7 == 0 else 200

    def end_ms(self, days_ago: int) -> int:
        return self.now_ms - days_ago * DAY_MS - DAY_MS // 2

    def expected(self) -> Expected:
        out = Expected()
        for i in self.ids:
            plan, version = _plan(i), _version(i)
            out.new[plan] += 1
            calls = list(self.calls(i))
            out.spans += len(calls)
            out.activity_rows += len({(d, e) for d, e, _ in calls})
            for window, days in WINDOWS.items():
                inside = {e for d, e, _ in calls if d < days}
                if not inside:
                    continue
                out.active[plan, window] += 1
                out.client[version, window] += 1
                for e in inside:
                    out.endpoint[(*ENDPOINTS[e][:2], window)] += 1
                for feature in {ENDPOINTS[e][2] for e in inside} - {""}:
                    out.feature[feature, window] += 1
        return out

    def requests(self, spans_per_request: int = 5_000) -> Iterator[tuple[bytes, int]]:
        """The history as serialized ExportTraceServiceRequests, with their span counts."""
        templates = {}
        for e, (method, route, feature) in enumerate(ENDPOINTS):
            for status in (200, 503):
                attributes = [
                    key_value("http.request.method", method),
                    key_value("http.route", route),
                    key_value("http.response.status_code", status),
                ]
                if feature:
                    attributes.append(key_value("apiusage.feature", feature))
                templates[e, status] = Span(
                    kind=Span.SPAN_KIND_SERVER, name=f"{method} {route}", attributes=attributes
                )
        request, n, serial = self._new_request(), 0, 0
        spans = request.resource_spans[0].scope_spans[0].spans
        for i in self.ids:
            per_consumer = [
                key_value("apiusage.consumer.id", f"s{i:06d}"),
                key_value("apiusage.consumer.plan_tier", _plan(i)),
                key_value("apiusage.client.name", CLIENT),
                key_value("apiusage.client.version", _version(i)),
            ]
            for days_ago, e, status in self.calls(i):
                serial += 1
                span = spans.add()
                span.MergeFrom(templates[e, status])  # copying a template: 3x faster than building
                span.attributes.extend(per_consumer)
                span.trace_id = serial.to_bytes(16, "big")
                span.span_id = serial.to_bytes(8, "big")
                span.end_time_unix_nano = self.end_ms(days_ago) * 1_000_000
                span.start_time_unix_nano = span.end_time_unix_nano - 20_000_000
                n += 1
                if n == spans_per_request:
                    yield request.SerializeToString(), n
                    request, n = self._new_request(), 0
                    spans = request.resource_spans[0].scope_spans[0].spans
        if n:
            yield request.SerializeToString(), n

    @staticmethod
    def _new_request() -> ExportTraceServiceRequest:
        request = ExportTraceServiceRequest()
        add_resource(request, {"service.name": SERVICE})
        return request


def fresh_request(service: str, n: int, first_serial: int = 1 << 40) -> bytes:
    """n successful GET /v1/fresh spans of `service` ending now, without a consumer."""
    request = ExportTraceServiceRequest()
    scope = add_resource(request, {"service.name": service})
    now_ns = time.time_ns()
    attributes = {"http.request.method": "GET", "http.route": "/v1/fresh", "http.response.status_code": 200}
    for k in range(n):
        serial = first_serial + k
        add_span(
            scope,
            attributes,
            name="GET /v1/fresh",
            start_ns=now_ns - 10_000_000,
            end_ns=now_ns,
            trace_id=serial.to_bytes(16, "big"),
            span_id=serial.to_bytes(8, "big"),
        )
    return request.SerializeToString()


class Exporter:
    """POSTs OTLP/HTTP protobuf on one keep-alive connection and, as the OTLP exporters do,
    retries the retryable answers (429, 502, 503, 504) after Retry-After, within a deadline."""

    RETRYABLE = (429, 502, 503, 504)

    def __init__(self, http_endpoint: str, timeout: float = 30.0) -> None:
        url = urlsplit(http_endpoint)
        self._host, self._port = url.hostname, url.port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self.retries = 0

    def export(self, body: bytes, deadline: float) -> None:
        while True:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            try:
                self._conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                response = self._conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):
                self.close()  # the server closed a keep-alive connection: a new one, as exporters do
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
                continue
            if response.status == 200:
                return
            if response.status not in self.RETRYABLE or time.monotonic() > deadline:
                raise AssertionError(f"export refused: {response.status} {answer[:200]!r}")
            self.retries += 1
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            time.sleep(min(float(response.getheader("Retry-After") or 1), 1.0))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def send_history(
    http_endpoint: str, history: History | Iterable[tuple[bytes, int]], timeout: float = 60.0
) -> int:
    """Export the whole history (or its requests, built beforehand); returns the spans sent."""
    deadline = time.monotonic() + timeout
    exporter = Exporter(http_endpoint)
    sent = 0
    try:
        for body, n in history.requests() if isinstance(history, History) else history:
            exporter.export(body, deadline)
            sent += n
    finally:
        exporter.close()
    return sent
