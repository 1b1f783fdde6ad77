"""The real OpenTelemetry SDK exporters send spans to a running processor; /metrics tells exact counts."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families

from tests.support.processor import get, matching, running_processor, sample

T0 = 1_700_000_000_000_000_000  # a fixed start; the data-quality window is widened below
MS = 1_000_000

STABLE = [  # (count, attributes, duration ms)
    (
        3,
        {
            "http.request.method": "GET",
            "http.route": "/v1/orders/{order_id}",
            "http.response.status_code": 200,
            "apiusage.consumer.id": "c-1",
            "apiusage.consumer.plan_tier": "pro",
            "apiusage.client.name": "orders-sdk",
            "apiusage.client.version": "1.2.0",
            "apiusage.schema_version": 1,
        },
        20,
    ),
    (
        1,
        {
            "http.request.method": "GET",
            "http.route": "/v1/orders/{order_id}",
            "http.response.status_code": 404,
            "apiusage.consumer.id": "c-2",
            "apiusage.consumer.plan_tier": "pro",
            "apiusage.client.name": "orders-sdk",
            "apiusage.client.version": "1.2.0",
        },
        3,
    ),
    (
        2,
        {
            "http.request.method": "DELETE",
            "http.route": "/v1/orders/{order_id}",
            "http.response.status_code": 500,
            "apiusage.consumer.id": "c-3",
            "apiusage.consumer.plan_tier": "free",
            "apiusage.endpoint.deprecated": True,
            "user_agent.original": "orders-cli/0.9.1 (linux)",
        },
        700,
    ),
]
OLD = [
    (
        2,
        {
            "http.method": "POST",
            "http.route": "/v2/orders",
            "http.status_code": 201,
            "http.user_agent": "curl/8.5.0",
            "enduser.id": "c-4",
        },
        40,
    ),
    (
        1,
        {
            "http.method": "GET",
            "http.target": "/v1/users/12345?token=secret",
            "http.status_code": 200,
            "apiusage.consumer.id": "c-5",
        },
        8,
    ),
]


def _exporter(transport: str, running) -> object:
    if transport == "grpc":
        return GrpcExporter(endpoint=running.grpc_endpoint, insecure=True)
    return HttpExporter(endpoint=f"{running.http_endpoint}/v1/traces")


def _send(exporter, service: str) -> dict[int, set[str]]:
    """Emit the fixture spans; returns the trace ids (hex) per duration in ms."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    ids = {}
    for count, attributes, ms in STABLE + OLD:
        for _ in range(count):
            span = tracer.start_span("req", kind=SpanKind.SERVER, attributes=attributes, start_time=T0)
            span.end(end_time=T0 + ms * MS)
            ids.setdefault(ms, set()).add(format(span.get_span_context().trace_id, "032x"))
    for kind in (SpanKind.INTERNAL, SpanKind.CLIENT):
        tracer.start_span("inner", kind=kind, start_time=T0).end(end_time=T0 + MS)
    tracer.start_span("rpc", kind=SpanKind.SERVER, attributes={"rpc.system": "grpc"}, start_time=T0).end(
        end_time=T0 + MS
    )
    assert provider.force_flush(10_000)
    provider.shutdown()
    return ids


ACCEPT_OLD_SPANS = {"processors": {"usage": {"data_quality": {"max_past_age": "36500d"}}}}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporter_spans_become_exact_usage_metrics(transport: str) -> None:
    with running_processor(ACCEPT_OLD_SPANS) as running:
        ids = _send(_exporter(transport, running), "orders-api")
        m = running.wait_processed(12)

        def requests(**labels: str) -> float | None:
            return sample(m, "api_requests_total", service="orders-api", **labels)

        assert (
            requests(
                method="GET",
                route="/v1/orders/{order_id}",
                status_code="200",
                plan_tier="pro",
                deprecated="false",
            )
            == 3
        )
        assert (
            requests(
                method="GET",
                route="/v1/orders/{order_id}",
                status_code="404",
                plan_tier="pro",
                deprecated="false",
            )
            == 1
        )
        assert (
            requests(
                method="DELETE",
                route="/v1/orders/{order_id}",
                status_code="500",
                plan_tier="free",
                deprecated="true",
            )
            == 2
        )
        assert (
            requests(
                method="POST", route="/v2/orders", status_code="201", plan_tier="unknown", deprecated="false"
            )
            == 2
        )
        # No http.route: the raw target becomes a template; the query never shows.
        assert (
            requests(
                method="GET",
                route="/v1/users/{id}",
                status_code="200",
                plan_tier="unknown",
                deprecated="false",
            )
            == 1
        )
        assert len(matching(m, "api_requests_total")) == 5
        assert sum(matching(m, "api_requests_total").values()) == 9

        def clients(**labels: str) -> float | None:
            return sample(m, "api_client_requests_total", service="orders-api", **labels)

        assert clients(client_name="orders-sdk", client_version="1.2.0", status_class="2xx") == 3
        assert clients(client_name="orders-sdk", client_version="1.2.0", status_class="4xx") == 1
        assert clients(client_name="orders-cli", client_version="0.9.1", status_class="5xx") == 2
        assert clients(client_name="curl", client_version="8.5.0", status_class="2xx") == 2
        assert clients(client_name="unknown", client_version="unknown", status_class="2xx") == 1

        assert matching(m, "api_deprecated_requests_total") == {
            frozenset(
                {
                    "service": "orders-api",
                    "method": "DELETE",
                    "route": "/v1/orders/{order_id}",
                    "plan_tier": "free",
                    "client_name": "orders-cli",
                    "client_version": "0.9.1",
                }.items()
            ): 2
        }

        get_orders = dict(service="orders-api", method="GET", route="/v1/orders/{order_id}", plan_tier="pro")
        assert sample(m, "api_request_duration_seconds_count", **get_orders) == 4
        assert sample(m, "api_request_duration_seconds_sum", **get_orders) == pytest.approx(0.063)
        assert sample(m, "api_request_duration_seconds_bucket", le="0.005", **get_orders) == 1
        assert sample(m, "api_request_duration_seconds_bucket", le="0.01", **get_orders) == 1
        assert sample(m, "api_request_duration_seconds_bucket", le="0.025", **get_orders) == 4
        assert sample(m, "api_request_duration_seconds_bucket", le="+Inf", **get_orders) == 4

        assert sample(m, "apiusage_spans_received_total", transport=transport) == 12
        assert sample(m, "apiusage_spans_ignored_total", reason="not_server") == 2
        assert sample(m, "apiusage_spans_ignored_total", reason="not_http") == 1
        assert sample(m, "apiusage_data_quality_issues_total", check="missing_route") == 1
        assert sample(m, "apiusage_data_quality_issues_total", check="missing_consumer") == 0
        assert sample(m, "apiusage_spans_rejected_total", reason="invalid_span") == 0
        assert sample(m, "apiusage_export_requests_total", transport=transport, outcome="success") == 1

        # Exemplars: an OpenMetrics scrape links the 20 ms bucket to a real trace id.
        status, body, headers = get(
            running.metrics_url, {"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
        exemplars = {
            s.labels["le"]: s.exemplar
            for f in om_families(body.decode())
            if f.name == "api_request_duration_seconds"
            for s in f.samples
            if s.name.endswith("_bucket")
            and s.labels.get("method") == "GET"
            and s.labels.get("route") == "/v1/orders/{order_id}"
            and s.exemplar
        }
        assert sorted(exemplars) == ["0.005", "0.025"]
        assert exemplars["0.025"].labels["trace_id"] in ids[20]
        assert exemplars["0.025"].value == pytest.approx(0.02)
        assert exemplars["0.005"].labels["trace_id"] in ids[3]


def test_consumer_ids_never_become_labels() -> None:
    with running_processor(ACCEPT_OLD_SPANS) as running:
        _send(_exporter("http", running), "orders-api")
        running.wait_processed(12)
        status, body, _ = get(running.metrics_url)
        text = body.decode()
        for consumer in ("c-1", "c-2", "c-3", "c-4", "c-5"):
            assert f'"{consumer}"' not in text
        assert "token=secret" not in text and "12345" not in text
