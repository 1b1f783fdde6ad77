"""Issue 16 end to end, span events: a real FastAPI app under apiusage.instrumentation.instrument()
evaluates flags with the real OpenFeature SDK and its OpenTelemetry TracingHook, and the SDK's OTLP
gRPC exporter sends the spans to a running processor. The ApiRequests its worker derives (read by
a sink added beside the processor's own) carry exactly the flags evaluated and the resource's
service.version; the targeting key (a raw user id here) is in none of them.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import httpx
import pytest
from apiusage.instrumentation import instrument
from apiusage.processor.derive.requests import ApiRequest
from fastapi import FastAPI
from openfeature import api
from openfeature.contrib.hook.opentelemetry import TracingHook
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.support.polling import poll
from tests.support.processor import running_processor, sample

pytestmark = pytest.mark.slow  # a real processor, SDK exporter and app

SERVICE = "shop-api"
VERSION = "1.5.0"
KEY = "e2e-flags-pseudonym-key-0123456789"
TARGETING_KEY = "alice@example.com"  # a raw user id: must never reach the processor's output


class Recorder:
    """A sink beside the processor's own: keeps every ApiRequest the worker derives."""

    def __init__(self) -> None:
        self.requests: list[ApiRequest] = []
        self._lock = threading.Lock()

    def consume(self, requests: Sequence[ApiRequest]) -> None:
        with self._lock:
            self.requests.extend(requests)


@pytest.fixture
def flags() -> Iterator[None]:
    """The global OpenFeature API with an in-memory provider and the tracing hook, reset after."""
    api.set_provider(
        InMemoryProvider(
            {
                "new-checkout": InMemoryFlag("treatment", {"control": "v1", "treatment": "v2"}),
                "dark-mode": InMemoryFlag("off", {"on": True, "off": False}),
            }
        )
    )
    api.add_hooks([TracingHook()])
    try:
        yield
    finally:
        api.clear_hooks()
        api.clear_providers()


def build_app() -> FastAPI:
    app = FastAPI()
    client = api.get_client()

    @app.get("/checkout/{cart_id}")
    def checkout(cart_id: str) -> dict:
        context = EvaluationContext(targeting_key=TARGETING_KEY)
        flow = client.get_string_value("new-checkout", "v1", context)
        dark = client.get_boolean_value("dark-mode", False, context)
        return {"cart": cart_id, "flow": flow, "dark": dark}

    @app.get("/search")
    def search() -> dict:
        # Not declared: the hook records no variant, only the default's JSON, an object: refused.
        layout = client.get_object_value("search-layout", {"columns": 3})
        return {"results": [], "layout": layout}

    @app.get("/health")
    def health() -> dict:
        return {"ok": True}

    return app


async def call(app: FastAPI, paths: list[str]) -> list[int]:
    """GET each path from the app in-process (httpx's ASGI transport); the statuses."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return [(await client.get(path)).status_code for path in paths]


@pytest.mark.usefixtures("flags")
def test_flag_span_events_from_openfeature_reach_the_derived_requests() -> None:
    with running_processor() as running:
        recorder = Recorder()
        running.processor.worker._sinks.append(recorder)
        provider = TracerProvider(
            resource=Resource.create({"service.name": SERVICE, "service.version": VERSION})
        )
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{running.grpc_endpoint}", insecure=True))
        )
        app = build_app()
        instrument(app, tracer_provider=provider, pseudonym_key=KEY, service_name=SERVICE)
        statuses = asyncio.run(call(app, ["/checkout/c1", "/checkout/c2", "/search", "/health"]))
        assert statuses == [200, 200, 200, 200]
        assert provider.force_flush(10_000)
        provider.shutdown()
        poll(lambda: len(recorder.requests) >= 4, 15, interval=0.05)
        samples = running.scrape()

    by_route = sorted(recorder.requests, key=lambda r: (r.route, r.end_time_ns))
    assert [(r.service, r.method, r.route, r.status_code) for r in by_route] == [
        (SERVICE, "GET", "/checkout/{cart_id}", "200"),
        (SERVICE, "GET", "/checkout/{cart_id}", "200"),
        (SERVICE, "GET", "/health", "200"),
        (SERVICE, "GET", "/search", "200"),
    ]
    checkout = (("new-checkout", "treatment"), ("dark-mode", "off"))
    assert [r.flags for r in by_route] == [checkout, checkout, None, None]
    assert [r.service_version for r in by_route] == [VERSION] * 4
    assert sample(samples, "apiusage_data_quality_issues_total", check="invalid_flag_evaluation") == 1
    assert sample(samples, "apiusage_data_quality_issues_total", check="flag_evaluations_truncated") == 0
    assert TARGETING_KEY not in repr(recorder.requests)
