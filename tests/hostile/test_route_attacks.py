"""Hostile `http.route` values beside real ones of other frameworks, through a running processor.

Spans of a service whose routes are nested brackets, regex bombs, control characters, RTL
marks, fullwidth slashes and 60 KB strings must cost only themselves: no error, no lost
span, and the real routes beside them (Rails, Express 5, Go, Django spellings) still find
their catalog entries written from an OpenAPI document.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from tests.support.processor import matching, running_processor, sample

pytestmark = pytest.mark.slow  # 10,000 hostile spans through a real processor

CATALOG = """\
services:
  shop:
    endpoints:
      - {method: GET, route: "/posts/{id}", deprecated: true}
      - {method: GET, route: "/files/{name}.{ext}", deprecated: true}
      - {method: GET, route: "/items/{id}", deprecated: true}
      - {method: GET, route: "/users/{id}/", deprecated: true}
"""
REAL = ["/posts/:id(.:format)", "/files/:name{.:ext}", "GET /items/{id}", "users/<int:id>/"]


def _hostile(i: int) -> str:
    kinds = [
        "/" + "{" * 3000,
        "/" + "{/" * 1000,
        "/" + "(a+)+" * 400,
        "/{id:" + "(a|aa)*" * 280 + "}",
        "/" + ":a-" * 700,
        "/" + "/:a" * 600,
        f"/v1/\u200f{i}/\uff0fx",
        f"/v1/x\x00\r\n{i}",
        "/" + "(/a" * 680 + ")" * 680,
    ]
    return kinds[i % len(kinds)] + str(i)


def test_hostile_routes_cost_only_themselves(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    routes = [REAL[i // 10 % len(REAL)] if i % 10 == 0 else _hostile(i) for i in range(10_000)]
    routes += ["/" + "a" * 60_000 + str(i) for i in range(3)]  # under the body limit, over any label
    config = {"catalog": str(tmp_path / "catalog.yaml"), "state": {"refresh_interval": "1h"}}
    with running_processor(config) as running:
        provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        exporter = OTLPSpanExporter(endpoint=f"{running.http_endpoint}/v1/traces")
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=len(routes), max_export_batch_size=512)
        )
        tracer = provider.get_tracer("test")
        started = time.monotonic()
        for route in routes:
            now = time.time_ns()
            attributes = {"http.request.method": "GET", "http.route": route, "http.response.status_code": 200}
            tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes, start_time=now - 10**6).end(
                end_time=now
            )
        assert provider.force_flush(60_000)
        provider.shutdown()
        m = running.wait_processed(len(routes), timeout=60)
        elapsed = time.monotonic() - started
    assert sample(m, "apiusage_processing_errors_total") == 0.0
    deprecated = {dict(lb)["route"]: v for lb, v in matching(m, "api_deprecated_requests_total").items()}
    assert deprecated == {route: 250.0 for route in REAL}  # as the framework wrote it, every one
    assert elapsed < 60


def test_the_processors_own_route_placeholders_match_no_catalog_entry(tmp_path: Path) -> None:
    """A span without route or path is labelled `unknown`; keys give slash-less routes (Django,
    ASP.NET) their leading `/`, which must not turn `unknown` into the catalog's `/unknown`."""
    (tmp_path / "catalog.yaml").write_text(
        "services:\n  shop:\n    endpoints:\n"
        "      - {method: GET, route: /unknown, deprecated: true}\n"
        "      - {method: GET, route: /WeatherForecast, deprecated: true}\n"
    )
    config = {"catalog": str(tmp_path / "catalog.yaml"), "state": {"refresh_interval": "1h"}}
    with running_processor(config) as running:
        provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{running.http_endpoint}/v1/traces"))
        )
        tracer = provider.get_tracer("test")
        for route in (None, "WeatherForecast"):  # no route at all; an ASP.NET controller's RawText
            now = time.time_ns()
            attributes = {"http.request.method": "GET", "http.response.status_code": 200}
            if route is not None:
                attributes["http.route"] = route
            tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes, start_time=now - 10**6).end(
                end_time=now
            )
        assert provider.force_flush(10_000)
        provider.shutdown()
        m = running.wait_processed(2)
    deprecated = {dict(lb)["route"]: v for lb, v in matching(m, "api_deprecated_requests_total").items()}
    assert deprecated == {"WeatherForecast": 1.0}
    assert {dict(lb)["route"]: dict(lb)["deprecated"] for lb in matching(m, "api_requests_total")} == {
        "unknown": "false",
        "WeatherForecast": "true",
    }
