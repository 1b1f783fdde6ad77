"""The per-request shortcuts give exactly what the plain paths give.

The enricher caches the caller's attributes per distinct set of inputs, writes straight
into the SDK span's attribute dict, and reads the current span from OpenTelemetry's
context variable; the scrubbing processor decides per attribute-key layout. These tests
pin the cases where a shortcut could go wrong.
"""

from __future__ import annotations

import asyncio

from apiusage.instrumentation import RedactingSpanProcessor, instrument
from apiusage.instrumentation._middleware import _current_span
from apiusage.instrumentation._redact import Scrubber, install
from fastapi import FastAPI, Request
from instr_support import KEY, Spans, pseudonym
from opentelemetry import context, trace
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import INVALID_SPAN, SpanKind
from opentelemetry.trace.propagation import _SPAN_KEY
from orders_app import build_app


def test_cached_caller_attributes_follow_each_input(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, consumer="header,state")
    client = client_for(app)
    got = []
    for headers in (
        {"X-API-Key": "k-1", "Authorization": "Bearer tok-enterprise"},
        {"X-API-Key": "k-1", "Authorization": "Bearer tok-free"},  # same key, other state
        {"X-API-Key": "k-1", "Authorization": "Bearer tok-enterprise"},
        {"Authorization": "Bearer tok-free"},  # consumer from request.state
        {"X-API-Key": "k-2", "User-Agent": "cli/2.0"},
        {"X-API-Key": "k-2", "User-Agent": "cli/2.1"},
        {"X-API-Key": "k-2", "X-Client-Name": "sdk", "X-Client-Version": "9", "User-Agent": "cli/2.1"},
    ):
        assert client.get("/v2/me", headers=headers).status_code == 200
        attrs = spans.apiusage()
        got.append(
            (
                attrs.get("apiusage.consumer.id"),
                attrs["apiusage.consumer.plan_tier"],
                attrs.get("apiusage.client.name"),
                attrs.get("apiusage.client.version"),
            )
        )
    assert got == [
        (pseudonym("k-1"), "enterprise", "testclient", None),
        (pseudonym("k-1"), "free", "testclient", None),
        (pseudonym("k-1"), "enterprise", "testclient", None),
        (pseudonym("acct-7"), "free", "testclient", None),
        (pseudonym("k-2"), "unknown", "cli", "2.0"),
        (pseudonym("k-2"), "unknown", "cli", "2.1"),
        (pseudonym("k-2"), "unknown", "sdk", "9"),
    ]


def test_the_same_caller_on_other_routes_gets_each_routes_facts(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, api_version_header="API-Version")
    client = client_for(app)
    rows = []
    for method, path, extra in (
        ("GET", "/v1/orders/1", {}),
        ("GET", "/v2/invoices/1", {}),
        ("GET", "/v1/legacy/report", {}),
        ("GET", "/v1/orders/1", {"API-Version": "2026-01"}),
        ("GET", "/v1/orders/1", {}),
        ("GET", "/v7/nowhere", {}),
    ):
        client.request(method, path, headers={"X-API-Key": "k-1", **extra})
        attrs = spans.apiusage()
        rows.append(
            (
                attrs.get("apiusage.api.version"),
                attrs.get("apiusage.feature"),
                attrs["apiusage.endpoint.deprecated"],
            )
        )
    assert rows == [
        ("v1", "orders", False),
        ("v2", "billing", False),
        ("v1", None, True),
        ("2026-01", "orders", False),
        ("v1", "orders", False),
        ("v7", None, False),
    ]


def asgi_get(app, path: str, headers: list[tuple[bytes, bytes]]) -> int:
    """One GET straight into the ASGI app, with exactly these raw header lines."""
    sent = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "server": ("testserver", 80),
        "client": ("203.0.113.7", 5000),
        "headers": [(b"host", b"testserver"), *headers],
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"]


def test_a_repeated_header_counts_with_its_first_value(spans):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    assert (
        asgi_get(
            app,
            "/v1/orders/1",
            [(b"x-api-key", b"first"), (b"x-api-key", b"second"), (b"accept", b"a/b"), (b"accept", b"c/d")],
        )
        == 200
    )
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("first")
    assert (
        asgi_get(app, "/v1/orders/1", [(b"accept", b"a/b"), (b"accept", b"c/d"), (b"x-api-key", b"only")])
        == 200
    )
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("only")
    assert asgi_get(app, "/v1/orders/1", [(b"x-api-key", b"first")]) == 200
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("first")


def test_state_values_that_are_not_strings_are_read_each_time(spans, client_for):
    class Plan:
        """A value whose str() changes: a cached answer would show."""

        calls = 0

        def __str__(self) -> str:
            Plan.calls += 1
            return f"tier-{Plan.calls}"

    app = FastAPI()

    @app.get("/v1/things")
    async def things(request: Request) -> dict:
        request.state.plan_tier = Plan()
        return {}

    @app.get("/v1/numbered")
    async def numbered(request: Request) -> dict:
        request.state.plan_tier = 3
        return {}

    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    client = client_for(app)
    tiers = []
    for path in ("/v1/things", "/v1/things", "/v1/numbered", "/v1/numbered"):
        client.get(path, headers={"X-API-Key": "k"})
        tiers.append(spans.apiusage()["apiusage.consumer.plan_tier"])
    assert tiers == ["tier-1", "tier-2", "3", "3"]


def test_user_resolvers_are_asked_on_every_request(spans, client_for):
    asked = []

    def consumer(request):
        asked.append(request.url.path)
        return "same-caller"

    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, consumer=consumer)
    client = client_for(app)
    for _ in range(3):
        client.get("/v1/orders/1")
        assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("same-caller")
    assert asked == ["/v1/orders/1"] * 3


def limited_spans(limits: SpanLimits) -> Spans:
    """Spans() on a provider with span limits."""
    s = Spans()
    s.provider = TracerProvider(resource=s.provider.resource, span_limits=limits)
    s.provider.add_span_processor(SimpleSpanProcessor(s.exporter))
    return s


def test_span_limits_are_enforced_by_the_sdk(client_for):
    s = limited_spans(SpanLimits(max_attribute_length=6))
    app = build_app()
    instrument(app, tracer_provider=s.provider, pseudonym_key=KEY)
    client_for(app).get("/v1/orders/1", headers={"X-API-Key": "k", "User-Agent": "longclientname/1"})
    attrs = s.apiusage()
    assert attrs["apiusage.consumer.id"] == pseudonym("k")[:6]
    assert attrs["apiusage.client.name"] == "longcl"
    s.provider.shutdown()


def test_a_nearly_full_span_goes_through_the_sdk(client_for):
    s = limited_spans(SpanLimits(max_span_attributes=16))
    app = build_app()
    instrument(app, tracer_provider=s.provider, pseudonym_key=KEY)
    client_for(app).get("/v1/orders/1", headers={"X-API-Key": "k"})
    span = s.one_server()
    # The SDK dropped the oldest attributes to make room, as span.set_attributes does.
    assert len(span.attributes) <= 16 and span.dropped_attributes > 0
    assert span.attributes["apiusage.consumer.id"] == pseudonym("k")
    assert span.attributes["apiusage.endpoint.deprecated"] is False
    s.provider.shutdown()


def test_current_span_is_what_the_public_api_returns():
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    assert _current_span() is trace.get_current_span() is INVALID_SPAN
    with tracer.start_as_current_span("outer") as outer:
        assert _current_span() is outer
        with tracer.start_as_current_span("inner") as inner:
            assert _current_span() is inner
        assert _current_span() is outer
    # Something that is not a Span under the span key: the public API says INVALID_SPAN.
    token = context.attach(context.set_value(_SPAN_KEY, "not a span"))
    try:
        assert _current_span() is trace.get_current_span() is INVALID_SPAN
    finally:
        context.detach(token)


def test_the_scrub_plan_is_per_key_layout_but_urls_are_per_span():
    scrubber = Scrubber()
    layout = {"http.target": "", "http.url": "", "net.peer.ip": "1.2.3.4", "http.route": "/a"}
    with_query = {**layout, "http.target": "/a?k=SECRET", "http.url": "http://h/a?k=SECRET"}
    without = {**layout, "http.target": "/a", "http.url": "http://h/a#top"}
    assert scrubber.scrub(with_query, server=True) == {
        "http.target": "/a",
        "http.url": "http://h/a",
        "http.route": "/a",
    }
    assert scrubber.scrub(without, server=True) == {
        "http.target": "/a",
        "http.url": "http://h/a",
        "http.route": "/a",
    }
    # The same keys on a non-SERVER span: the client address stays.
    assert "net.peer.ip" in scrubber.scrub(with_query, server=False)


def test_a_header_named_sensitive_later_is_scrubbed_from_a_layout_seen_before():
    spans = Spans()
    install(spans.provider)
    tracer = spans.provider.get_tracer("test")

    def one_span() -> dict:
        with tracer.start_as_current_span("call", kind=SpanKind.CLIENT) as span:
            span.set_attribute("http.request.header.x_tenant", ("t-SECRET",))
            span.set_attribute("http.request.header.accept", ("*/*",))
        (finished,) = spans.all()
        spans.exporter.clear()
        return dict(finished.attributes)

    assert one_span() == {
        "http.request.header.x_tenant": ("t-SECRET",),
        "http.request.header.accept": ("*/*",),
    }
    install(spans.provider, ["X-Tenant"])  # e.g. a second instrument() with another consumer header
    assert one_span() == {"http.request.header.accept": ("*/*",)}
    assert isinstance(spans.provider._apiusage_redactor, RedactingSpanProcessor)
    spans.provider.shutdown()


def test_a_span_that_is_not_the_sdks_gets_the_same_attributes_through_its_api(spans):
    class ApiOnlySpan(trace.NonRecordingSpan):
        """A recording span of some other SDK: only the public API."""

        def __init__(self) -> None:
            super().__init__(trace.INVALID_SPAN_CONTEXT)
            self.attributes = {"http.route": "/v1/orders/{order_id}"}

        def is_recording(self) -> bool:
            return True

        def set_attributes(self, attributes) -> None:
            self.attributes.update(attributes)

    app = build_app()
    enricher = instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/orders/1",
        "root_path": "",
        "app": app,
        "headers": [(b"x-api-key", b"k"), (b"user-agent", b"cli/1.0")],
    }
    span = ApiOnlySpan()
    assert enricher.on_response(scope, span, app) == []
    assert span.attributes == {
        "http.route": "/v1/orders/{order_id}",
        "apiusage.schema_version": 2,
        "apiusage.consumer.id": pseudonym("k"),
        "apiusage.consumer.plan_tier": "unknown",
        "apiusage.client.name": "cli",
        "apiusage.client.version": "1.0",
        "apiusage.api.version": "v1",
        "apiusage.feature": "orders",
        "apiusage.endpoint.deprecated": False,
    }
