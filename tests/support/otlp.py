"""Build OTLP requests for tests."""

from __future__ import annotations

import os

from apiusage.demo.otlp import ExportTraceServiceRequest, add_resource, add_span


def request_with_spans(n: int, *, bad_ids: int = 0, service: str = "orders-api") -> ExportTraceServiceRequest:
    """n SERVER spans (GET /v1/orders → 200); the first `bad_ids` have an 8-byte trace id."""
    req = ExportTraceServiceRequest()
    scope = add_resource(req, {"service.name": service})
    attributes = {"http.request.method": "GET", "http.route": "/v1/orders", "http.response.status_code": 200}
    for i in range(n):
        trace_id = os.urandom(8) if i < bad_ids else os.urandom(16)
        add_span(scope, attributes, name="GET /v1/orders", start_ns=1, end_ns=2, trace_id=trace_id)
    return req
