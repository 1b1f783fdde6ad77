"""Spans with chosen attributes, posted as OTLP/HTTP protobuf to a real processor (derivation tests)."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

# Short names for span(): the default attribute source of each field.
KEYS = {
    "method": "http.request.method",
    "route": "http.route",
    "status": "http.response.status_code",
    "consumer": "apiusage.consumer.id",
    "plan": "apiusage.consumer.plan_tier",
    "client": "apiusage.client.name",
    "version": "apiusage.client.version",
    "feature": "apiusage.feature",
    "deprecated": "apiusage.endpoint.deprecated",
}


def span(tracestate: str = "", **fields: object) -> dict:
    """One span's description: an HTTP SERVER span GET /v1/orders → 200 unless `fields` say
    otherwise (short names from KEYS; None leaves the attribute out)."""
    values = {"method": "GET", "route": "/v1/orders", "status": 200, **fields}
    return {"tracestate": tracestate, "attributes": {KEYS[k]: v for k, v in values.items()}}


def export_request(spans: Iterable[Mapping], service: str = "orders-api") -> bytes:
    """A serialized ExportTraceServiceRequest: one resource, the spans in order, ending now."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    scope = rs.scope_spans.add()
    end = time.time_ns()
    for desc in spans:
        s = scope.spans.add()
        s.trace_id, s.span_id = os.urandom(16), os.urandom(8)
        s.kind = 2
        s.name = "request"
        s.start_time_unix_nano, s.end_time_unix_nano = end - 5_000_000, end
        s.trace_state = desc.get("tracestate", "")
        for key, value in desc["attributes"].items():
            if value is None:
                continue
            a = s.attributes.add()
            a.key = key
            if isinstance(value, bool):
                a.value.bool_value = value
            elif isinstance(value, int):
                a.value.int_value = value
            else:
                a.value.string_value = value
    return req.SerializeToString()


def post(http_endpoint: str, body: bytes, timeout: float = 10) -> int:
    """POST /v1/traces; the HTTP status."""
    request = urllib.request.Request(
        f"{http_endpoint}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
