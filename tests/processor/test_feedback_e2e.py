"""Feedback events sent by the real OpenTelemetry SDK log exporters (OTLP/HTTP and OTLP/gRPC) to a
running processor become exact api_feedback_total values; the logs are answered as before."""

from __future__ import annotations

import gzip
import json
import urllib.request

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from tests.support.feedback import ORDERS, T, fb, feedback_attrs, logs_request
from tests.support.processor import get, matching, running_processor, sample, wait_for

pytestmark = pytest.mark.slow  # a processor and the SDK's batch processors per test

SCORE, CATEGORY, ROUTE = "apiusage.feedback.score", "apiusage.feedback.category", "apiusage.feedback.route"
TOKEN = "orders-api-token-0123456789"
AUTH = {"receivers": {"otlp": {"auth": {"tokens": [{"token": TOKEN, "service": "orders-api"}]}}}}


def emit_with_sdk(exporter: object, service: str = "orders-api") -> None:
    """5 feedback events, one with a refused score, an old-style one, and 2 plain log lines."""
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))  # type: ignore[arg-type]
    logger = provider.get_logger("apiusage.instrumentation")
    logger.emit(body="order placed", severity_number=SeverityNumber.INFO, attributes={"i": 1})
    for score, category, route in ((5, "docs", "/v1/orders"), (5, "docs", "/v1/orders"), (2, "errors", None)):
        attributes = {SCORE: score, CATEGORY: category, "apiusage.consumer.id": "c-1"}
        if route:
            attributes[ROUTE] = route
        logger.emit(event_name="apiusage.feedback", attributes=attributes)
    logger.emit(event_name="apiusage.feedback", attributes={SCORE: 7, CATEGORY: "docs"})  # refused
    # An SDK without the event_name field names the event in an attribute.
    logger.emit(attributes={"event.name": "apiusage.feedback", SCORE: "1", CATEGORY: "pricing"})
    logger.emit(body="apiusage.feedback endpoint called", severity_number=SeverityNumber.INFO)
    assert provider.force_flush(10_000)
    provider.shutdown()


def feedback(samples) -> dict[tuple[str, str, str, str], float]:
    return {
        (d["service"], d["route"], d["category"], d["score"]): v
        for labels, v in matching(samples, "api_feedback_total").items()
        for d in [dict(labels)]
    }


WANT = {
    ("orders-api", "/v1/orders", "docs", "5"): 2,
    ("orders-api", "", "errors", "2"): 1,
    ("orders-api", "", "pricing", "1"): 1,
}


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sdk_feedback_events_become_exact_feedback_counts(transport: str) -> None:
    with running_processor() as running:
        if transport == "grpc":
            exporter = GrpcLogExporter(endpoint=f"http://{running.grpc_endpoint}", insecure=True, timeout=5)
        else:
            exporter = HttpLogExporter(endpoint=f"{running.http_endpoint}/v1/logs", timeout=5)
        emit_with_sdk(exporter)
        m = wait_for(running, "apiusage_data_quality_issues_total", 1, check="invalid_feedback_score")
        m = wait_for(
            running, "api_feedback_total", 1, service="orders-api", route="", category="pricing", score="1"
        )
        assert feedback(m) == WANT
        requests = matching(m, "apiusage_export_requests_total", transport=transport)
        assert requests == {frozenset({"transport": transport, "outcome": "logs_not_forwarded"}.items()): 1}
        # Feedback is not spans: the span counters are untouched.
        assert sample(m, "apiusage_spans_processed_total") == 0
        text = get(running.metrics_url)[1].decode()
        assert "api_feedback_total{" in text and '"c-1"' not in text  # consumer ids are never labels


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


PB = {"Content-Type": "application/x-protobuf"}


def test_a_json_body_a_large_body_and_a_gzipped_one_are_read_exactly() -> None:
    def kv(key: str, value: dict) -> dict:
        return {"key": key, "value": value}

    as_json = json.dumps(
        {
            "resourceLogs": [
                {
                    "resource": {"attributes": [kv("service.name", {"stringValue": "billing-api"})]},
                    "scopeLogs": [
                        {
                            "logRecords": [
                                {
                                    "eventName": "apiusage.feedback",
                                    "timeUnixNano": str(T),
                                    "attributes": [
                                        kv(SCORE, {"intValue": "3"}),
                                        kv(CATEGORY, {"stringValue": "docs"}),
                                    ],
                                },
                                {
                                    "eventName": "apiusage.feedback",
                                    "attributes": [kv(SCORE, {"intValue": "0"})],
                                },
                            ]
                        }
                    ],
                }
            ]
        }
    ).encode()
    records = [{"body": f"order {i} placed", "time": T, "attributes": {"i": i}} for i in range(100_000)]
    for i, score in ((3, 4), (60_000, 4), (99_998, 1)):
        records[i] = fb(attributes=feedback_attrs(score, "docs"))
    large = logs_request((ORDERS, records)).SerializeToString()
    small = logs_request((ORDERS, [fb(attributes=feedback_attrs(2, "sdk"))])).SerializeToString()
    with running_processor() as running:
        url = f"{running.http_endpoint}/v1/logs"
        assert post(url, as_json, {"Content-Type": "application/json"}) == (200, b"{}")
        assert post(url, large, PB) == (200, b"")
        assert post(url, gzip.compress(small), {**PB, "Content-Encoding": "gzip"}) == (200, b"")
        m = wait_for(
            running, "api_feedback_total", 1, service="orders-api", route="", category="sdk", score="2"
        )
        m = wait_for(running, "apiusage_data_quality_issues_total", 1, check="invalid_feedback_score")
        assert feedback(m) == {
            ("billing-api", "", "docs", "3"): 1,
            ("orders-api", "", "docs", "4"): 2,
            ("orders-api", "", "docs", "1"): 1,
            ("orders-api", "", "sdk", "2"): 1,
        }
        assert (
            sample(m, "apiusage_export_requests_total", transport="http", outcome="logs_not_forwarded") == 3
        )


def test_malformed_bodies_are_answered_as_before_and_count_nothing() -> None:
    with running_processor() as running:
        url = f"{running.http_endpoint}/v1/logs"
        good = logs_request((ORDERS, [fb()])).SerializeToString()
        status, body = post(url, good[:-3], PB)  # cut: the framing check refuses it, as before
        assert status == 400 and b"cannot decode this logs export request" in body
        assert post(url, b'{"resourceLogs": {}}', {"Content-Type": "application/json"}) == (
            400,
            b'{"code": 3, "message": "cannot decode this logs export request: resourceLogs must be a list '
            b'(ExportLogsServiceRequest)"}',
        )
        # Well framed, but the feedback record in it is not UTF-8 where a string must be.
        broken = logs_request((ORDERS, [fb(body="\u00e9\u00e9")])).SerializeToString()
        broken = broken.replace("\u00e9".encode(), b"\xc3\x41", 1)
        status, body = post(url, broken, PB)
        assert status == 400
        assert b"resource_logs[0].scope_logs[0].log_records[0] cannot be decoded" in body
        m = running.scrape()
        assert sample(m, "apiusage_export_requests_total", transport="http", outcome="invalid") == 3
        assert feedback(m) == {}


def test_feedback_from_a_service_bound_token_naming_another_service_is_refused() -> None:
    with running_processor(AUTH) as running:
        url = f"{running.http_endpoint}/v1/logs"
        headers = {**PB, "Authorization": f"Bearer {TOKEN}"}
        other = logs_request(({"service.name": "billing-api"}, [fb()]), (ORDERS, [fb()])).SerializeToString()
        status, body = post(url, other, headers)
        assert status == 403
        assert b"1 of 2 resources have a service.name other than 'orders-api'" in body
        mine = logs_request((ORDERS, [fb(attributes=feedback_attrs(5, "docs"))])).SerializeToString()
        assert post(url, mine, headers) == (200, b"")
        m = wait_for(
            running, "api_feedback_total", 1, service="orders-api", route="", category="docs", score="5"
        )
        assert feedback(m) == {("orders-api", "", "docs", "5"): 1}
        assert (
            sample(m, "apiusage_export_requests_total", transport="http", outcome="unauthorized_service") == 1
        )
