"""API design families end to end: the real OpenTelemetry SDK exporter sends schema version 1 and 2
spans in one batch to a running processor; /metrics tells exact values."""

from __future__ import annotations

import time

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

from tests.support.processor import Samples, get, matching, running_processor, sample

MS = 1_000_000
V2 = {"apiusage.schema_version": 2}
POST_ORDERS = {"http.request.method": "POST", "http.route": "/v2/orders", "apiusage.client.name": "go-sdk"}
SPANS = [  # (count, attributes, duration ms)
    (
        3,
        {
            **V2,
            **POST_ORDERS,
            "http.response.status_code": 201,
            "http.request.body.size": 300,
            "http.response.body.size": 5000,
            "apiusage.client.region": "DE",
            "apiusage.request.query_parameters": ["dry_run"],
            "apiusage.request.body_fields": ["quantity", "sku"],
        },
        20,
    ),
    (
        2,
        {
            **V2,
            **POST_ORDERS,
            "http.response.status_code": 422,
            "http.request.body.size": 70,
            "http.response.body.size": 200,
            "apiusage.client.region": "fr",  # upper-cased
            "apiusage.request.body_fields": ["quantity"],
            "apiusage.validation.error_locations": ["body.quantity", "query.limit"],
            "apiusage.validation.error_types": ["int_parsing", "missing"],
        },
        3,
    ),
    (
        1,
        {
            **V2,
            "http.request.method": "GET",
            "http.route": "/v2/orders/{order_id}",
            "http.response.status_code": 500,
            "http.response.body.size": 0,
            "error.type": "TimeoutError",
            "apiusage.client.name": "py-sdk",
            "apiusage.client.region": "T1",  # not a country: unknown, and counted
        },
        700,
    ),
    (  # schema version 1, with the old semantic conventions' size attribute
        2,
        {
            "apiusage.schema_version": 1,
            "http.method": "GET",
            "http.route": "/v1/orders",
            "http.status_code": 200,
            "http.response_content_length": 1000,
            "apiusage.client.name": "py-sdk",
        },
        8,
    ),
]


def _send(exporter: object, service: str, region: str | None, spans: list) -> None:
    attributes = {"service.name": service} | ({"cloud.region": region} if region else {})
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))  # type: ignore[arg-type]
    tracer = provider.get_tracer("test")
    t0 = time.time_ns() - 5_000 * MS
    for count, attrs, ms in spans:
        for _ in range(count):
            span = tracer.start_span("req", kind=SpanKind.SERVER, attributes=attrs, start_time=t0)
            span.end(end_time=t0 + ms * MS)
    assert provider.force_flush(10_000)
    provider.shutdown()


def _exporter(transport: str, running) -> object:
    if transport == "grpc":
        return GrpcExporter(endpoint=running.grpc_endpoint, insecure=True)
    return HttpExporter(endpoint=f"{running.http_endpoint}/v1/traces")


def _run(transport: str) -> tuple[Samples, str]:
    with running_processor() as running:
        _send(_exporter(transport, running), "orders-api", "eu-west-1", SPANS)
        _send(_exporter(transport, running), "legacy-api", None, [(1, SPANS[3][1], 8)])
        m = running.wait_processed(9)
        _, body, _ = get(running.metrics_url, {"Accept": "application/openmetrics-text; version=1.0.0"})
    return m, body.decode()


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sdk_spans_of_both_schema_versions_become_exact_design_metrics(transport: str) -> None:
    m, openmetrics = _run(transport)
    o = {"service": "orders-api"}
    post = {**o, "method": "POST", "route": "/v2/orders"}

    def buckets(name: str, **labels: str) -> dict[str, float]:
        return {dict(k)["le"]: v for k, v in matching(m, f"{name}_bucket", **labels).items() if v}

    # Cumulative buckets: 70 B twice (le=256), 300 B three times (le=1024).
    assert buckets("api_request_body_size_bytes", **post)["256.0"] == 2
    assert sample(m, "api_request_body_size_bytes_bucket", le="64.0", **post) == 0
    assert sample(m, "api_request_body_size_bytes_bucket", le="1024.0", **post) == 5
    assert sample(m, "api_request_body_size_bytes_count", **post) == 5
    assert sample(m, "api_request_body_size_bytes_sum", **post) == 1040
    assert len(matching(m, "api_request_body_size_bytes_count")) == 1  # only POST sent a size
    assert sample(m, "api_response_body_size_bytes_bucket", le="256.0", **post) == 2
    assert sample(m, "api_response_body_size_bytes_bucket", le="4096.0", **post) == 2
    assert sample(m, "api_response_body_size_bytes_bucket", le="16384.0", **post) == 5
    get_v1 = {"method": "GET", "route": "/v1/orders"}
    assert sample(m, "api_response_body_size_bytes_bucket", le="1024.0", **o, **get_v1) == 2
    assert sample(m, "api_response_body_size_bytes_bucket", le="256.0", **o, **get_v1) == 0
    assert sample(m, "api_response_body_size_bytes_sum", service="legacy-api", **get_v1) == 1000
    get_one = {**o, "method": "GET", "route": "/v2/orders/{order_id}"}
    assert sample(m, "api_response_body_size_bytes_bucket", le="64.0", **get_one) == 1

    assert matching(m, "api_errors_total") == {
        frozenset({**get_one, "error_type": "TimeoutError"}.items()): 1
    }

    def endpoint(
        client: str, method: str, route: str, status_class: str, service: str = "orders-api"
    ) -> float:
        labels = dict(
            service=service, client_name=client, method=method, route=route, status_class=status_class
        )
        return sample(m, "api_client_endpoint_requests_total", **labels) or 0

    assert endpoint("go-sdk", "POST", "/v2/orders", "2xx") == 3
    assert endpoint("go-sdk", "POST", "/v2/orders", "4xx") == 2
    assert endpoint("py-sdk", "GET", "/v2/orders/{order_id}", "5xx") == 1
    assert endpoint("py-sdk", "GET", "/v1/orders", "2xx") == 2
    assert endpoint("py-sdk", "GET", "/v1/orders", "2xx", "legacy-api") == 1
    assert len(matching(m, "api_client_endpoint_requests_total")) == 5

    def regions(client: str, server: str, status_class: str, service: str = "orders-api") -> float:
        labels = dict(service=service, client_region=client, server_region=server, status_class=status_class)
        return sample(m, "api_region_requests_total", **labels) or 0

    assert regions("DE", "eu-west-1", "2xx") == 3
    assert regions("FR", "eu-west-1", "4xx") == 2
    assert regions("unknown", "eu-west-1", "5xx") == 1
    assert regions("unknown", "eu-west-1", "2xx") == 2
    assert regions("unknown", "unknown", "2xx", "legacy-api") == 1
    assert len(matching(m, "api_region_requests_total")) == 5
    de, unknown = {**o, "client_region": "DE"}, {**o, "client_region": "unknown"}
    assert sample(m, "api_region_request_duration_seconds_bucket", le="0.01", **de) == 0
    assert sample(m, "api_region_request_duration_seconds_bucket", le="0.025", **de) == 3
    assert sample(m, "api_region_request_duration_seconds_bucket", le="0.005", **o, client_region="FR") == 2
    assert sample(m, "api_region_request_duration_seconds_bucket", le="0.01", **unknown) == 2
    assert sample(m, "api_region_request_duration_seconds_bucket", le="0.5", **unknown) == 2
    assert sample(m, "api_region_request_duration_seconds_bucket", le="1.0", **unknown) == 3
    assert sample(m, "api_region_request_duration_seconds_sum", **unknown) == pytest.approx(0.716)

    assert sample(m, "apiusage_data_quality_issues_total", check="invalid_client_region") == 1
    assert sample(m, "apiusage_data_quality_issues_total", check="unknown_schema_version") == 0
    assert sample(m, "apiusage_data_quality_issues_total", check="invalid_body_size") == 0
    assert sample(m, "apiusage_series", metric="api_region_requests") == 5

    # The OpenMetrics answer parses with its units (the strict parser checks name and unit agree).
    units = {f.name: f.unit for f in om_families(openmetrics) if f.name.startswith(("api_req", "api_resp"))}
    assert units["api_request_body_size_bytes"] == "bytes"
    assert units["api_response_body_size_bytes"] == "bytes"


def test_sdk_array_attributes_become_parameter_and_validation_counts() -> None:
    m, _ = _run("http")
    post = {"service": "orders-api", "method": "POST", "route": "/v2/orders"}
    assert matching(m, "api_parameter_requests_total") == {
        frozenset({**post, "location": "query", "parameter": "dry_run"}.items()): 3,
        frozenset({**post, "location": "body", "parameter": "quantity"}.items()): 5,
        frozenset({**post, "location": "body", "parameter": "sku"}.items()): 3,
    }
    assert matching(m, "api_validation_errors_total") == {
        frozenset({**post, "location": "body", "field": "quantity", "error_type": "int_parsing"}.items()): 2,
        frozenset({**post, "location": "query", "field": "limit", "error_type": "missing"}.items()): 2,
    }
