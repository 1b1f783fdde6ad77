"""Spans with chosen attributes, posted as OTLP/HTTP protobuf to a real processor (derivation tests)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping

from apiusage.demo.otlp import ExportTraceServiceRequest, add_resource, add_span

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
    scope = add_resource(req, {"service.name": service})
    end = time.time_ns()
    for desc in spans:
        add_span(
            scope,
            desc["attributes"],
            name="request",
            start_ns=end - 5_000_000,
            end_ns=end,
            trace_state=desc.get("tracestate", ""),
        )
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
