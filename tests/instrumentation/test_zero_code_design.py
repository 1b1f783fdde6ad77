"""Schema version 2 under ``opentelemetry-instrument uvicorn``: a real server, real HTTP, OTLP/HTTP out.

The server speaks real HTTP/1.1 (a chunked streaming response, a chunked upload), the SDK
is configured from ``OTEL_*`` variables alone, and traces and the feedback log record go
over OTLP/HTTP to a real receiver on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import httpx
import pytest
from design_app import EXPORT_SIZE
from instr_support import APPS, KEY, bin_path, free_port, need, pseudonym, stop, wait_for_port
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.otlp_sink import OtlpSink
from tests.support.polling import poll

pytestmark = pytest.mark.slow


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return tuple(value(v) for v in any_value.array_value.values)
    return getattr(any_value, kind) if kind else None


def server_spans(sink: OtlpSink) -> list[dict[str, Any]]:
    spans = []
    for received in sink.on("/v1/traces"):
        for resource_spans in received.message().resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if span.kind == Span.SPAN_KIND_SERVER:
                        spans.append({kv.key: value(kv.value) for kv in span.attributes})
    return spans


def feedback_records(sink: OtlpSink) -> list[tuple[str, dict[str, Any]]]:
    records = []
    for received in sink.on("/v1/logs"):
        for resource_logs in received.message().resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    records.append((record.event_name, {kv.key: value(kv.value) for kv in record.attributes}))
    return records


def test_schema_version_2_end_to_end_under_opentelemetry_instrument():
    instrument_bin = bin_path("opentelemetry-instrument")
    uvicorn_bin = bin_path("uvicorn")
    need(instrument_bin is not None and uvicorn_bin is not None, "opentelemetry-instrument and uvicorn")
    sink = OtlpSink()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APIUSAGE_", "PYTEST_"))}
    env.update(
        {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            "OTEL_SERVICE_NAME": "design-api",
            "OTEL_RESOURCE_ATTRIBUTES": "cloud.region=eu-north-1",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
            "APIUSAGE_PSEUDONYM_KEY": KEY,
            "APIUSAGE_BODY_FIELD_DEPTH": "2",
            "APIUSAGE_REGION_HEADERS": "CF-IPCountry",
        }
    )
    command = [instrument_bin, uvicorn_bin, "design_app:app", "--app-dir", str(APPS)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            headers = {"X-API-Key": "sk_design", "CF-IPCountry": "se"}
            order = {"sku": "A", "quantity": 2, "customer": {"id": "c", "address": {"city": "x"}}}
            assert client.post("/v1/orders?dry_run=true", json=order, headers=headers).status_code == 200
            bad = client.post("/v1/orders?limit=ten", json={"quantity": "two"}, headers=headers)
            assert bad.status_code == 422
            export = client.get("/v1/export", headers=headers)
            assert len(export.content) == EXPORT_SIZE
            assert export.headers.get("transfer-encoding") == "chunked"
            body = json.dumps({"k": "v" * 5000}).encode()

            def upload():
                for i in range(0, len(body), 1000):
                    yield body[i : i + 1000]

            echoed = client.post("/v1/echo", content=upload(), headers={"Content-Type": "application/json"})
            assert echoed.content == body
            thanks = client.post("/v1/feedback", json={"score": 5, "category": "docs"}, headers=headers)
            assert thanks.status_code == 200
        poll(lambda: len(server_spans(sink)) >= 5 and feedback_records(sink), 20, interval=0.1)
    finally:
        _, err = stop(process)
        sink.close()
    assert "Traceback" not in err, err

    v2_keys = (
        "apiusage.schema_version",
        "apiusage.request.query_parameters",
        "apiusage.request.body_fields",
        "http.request.body.size",
        "http.response.body.size",
        "apiusage.validation.error_locations",
        "apiusage.validation.error_types",
        "error.type",
        "apiusage.client.region",
    )
    got = [{k: s[k] for k in v2_keys if k in s} for s in server_spans(sink)]
    order_size = len(json.dumps(order, separators=(",", ":")))
    assert got == [
        {
            "apiusage.schema_version": 2,
            "apiusage.request.query_parameters": ("dry_run",),
            "apiusage.request.body_fields": (
                "customer",
                "customer.address",
                "customer.id",
                "quantity",
                "sku",
            ),
            "http.request.body.size": order_size,
            "http.response.body.size": len(b'{"ok":true}'),
            "apiusage.client.region": "SE",
        },
        {
            "apiusage.schema_version": 2,
            "apiusage.request.query_parameters": ("limit",),
            "apiusage.request.body_fields": ("quantity",),
            "http.request.body.size": len(b'{"quantity":"two"}'),
            "http.response.body.size": len(bad.content),
            "apiusage.validation.error_locations": ("query.limit", "body.sku", "body.quantity"),
            "apiusage.validation.error_types": ("int_parsing", "missing", "int_parsing"),
            "apiusage.client.region": "SE",
        },
        {
            "apiusage.schema_version": 2,
            "http.request.body.size": 0,
            "http.response.body.size": EXPORT_SIZE,
            "apiusage.client.region": "SE",
        },
        {
            "apiusage.schema_version": 2,
            "apiusage.request.body_fields": ("k",),
            "http.request.body.size": len(body),
            "http.response.body.size": len(body),
        },
        {
            "apiusage.schema_version": 2,
            "apiusage.request.body_fields": ("category", "score"),
            "http.request.body.size": len(b'{"score":5,"category":"docs"}'),
            "http.response.body.size": len(b'{"thanks":true}'),
            "apiusage.client.region": "SE",
        },
    ]
    assert feedback_records(sink) == [
        (
            "apiusage.feedback",
            {
                "apiusage.feedback.score": 5,
                "apiusage.feedback.category": "docs",
                "apiusage.consumer.id": pseudonym("sk_design"),
            },
        )
    ]
