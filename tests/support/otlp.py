"""Build OTLP requests for tests."""

from __future__ import annotations

import os

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def request_with_spans(n: int, *, bad_ids: int = 0, service: str = "orders-api") -> ExportTraceServiceRequest:
    """n SERVER spans (GET /v1/orders → 200); the first `bad_ids` have an 8-byte trace id."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    scope = rs.scope_spans.add()
    for i in range(n):
        span = scope.spans.add()
        span.trace_id = os.urandom(8) if i < bad_ids else os.urandom(16)
        span.span_id = os.urandom(8)
        span.kind = 2
        span.name = "GET /v1/orders"
        span.start_time_unix_nano = 1
        span.end_time_unix_nano = 2
        for key, value in (("http.request.method", "GET"), ("http.route", "/v1/orders")):
            a = span.attributes.add()
            a.key, a.value.string_value = key, value
        a = span.attributes.add()
        a.key, a.value.int_value = "http.response.status_code", 200
    return req
