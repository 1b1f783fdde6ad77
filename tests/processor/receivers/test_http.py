"""OTLP/HTTP answers, per the OTLP specification, over a real socket."""

from __future__ import annotations

import gzip
import json
import urllib.request

from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.support.otlp import request_with_spans

PB = "application/x-protobuf"


def post(url: str, body: bytes, content_type: str = PB, **headers: str) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, **headers}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def test_protobuf_success_is_an_empty_protobuf_response(stalled) -> None:
    status, body, headers = post(stalled.http_url, request_with_spans(3).SerializeToString())
    assert (status, body, headers["Content-Type"]) == (200, b"", PB)
    assert stalled.queue.depth == 3
    assert stalled.stats.spans_received["http"] == 3


def test_partial_success_names_the_rejected_spans(stalled) -> None:
    status, body, _ = post(stalled.http_url, request_with_spans(4, bad_ids=3).SerializeToString())
    assert status == 200
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 3
    assert response.partial_success.error_message == (
        "3 of 4 spans rejected: trace_id must be 16 bytes and span_id 8 bytes, neither all zeros"
    )
    assert stalled.queue.depth == 1
    assert stalled.stats.spans_rejected["invalid_span"] == 3


def _json_request(trace_ids: list[str]) -> dict:
    spans = [
        {
            "traceId": tid,
            "spanId": "00f067aa0ba902b7",
            "name": "GET /v1/orders",
            "kind": 2,
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": 1700000000020000000,
            "attributes": [
                {"key": "http.request.method", "value": {"stringValue": "GET"}},
                {"key": "http.response.status_code", "value": {"intValue": "200"}},
                {"key": "http.route", "value": {"stringValue": "/v1/orders"}},
            ],
            "someFutureField": {"ignored": True},
        }
        for tid in trace_ids
    ]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]},
                "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}],
                "unknownTopLevel": 1,
            }
        ]
    }


def test_json_with_hex_ids_unknown_fields_and_int64_strings(stalled) -> None:
    doc = _json_request(["4BF92F3577B34DA6A3CE929D0E0E4736", "4bf92f3577b34da6a3ce929d0e0e4737"])
    status, body, headers = post(stalled.http_url, json.dumps(doc).encode(), "application/json")
    assert (status, json.loads(body), headers["Content-Type"]) == (200, {}, "application/json")
    assert stalled.queue.depth == 2
    resources, spans, _ = stalled.queue.take(0)
    assert resources == [("orders",)]
    assert [s[4].hex() for s in spans] == [
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "4bf92f3577b34da6a3ce929d0e0e4737",
    ]
    assert [(s[1], s[2], s[3], s[8], s[9], s[10]) for s in spans] == [
        (2, 1700000000000000000, 1700000000020000000, "GET", "/v1/orders", 200)
    ] * 2


def test_json_span_with_bad_hex_id_is_a_partial_success(stalled) -> None:
    doc = _json_request(["not-hex", "4bf92f3577b34da6a3ce929d0e0e4737"])
    status, body, _ = post(stalled.http_url, json.dumps(doc).encode(), "application/json")
    assert status == 200
    assert json.loads(body) == {
        "partialSuccess": {
            "rejectedSpans": "1",
            "errorMessage": "1 of 2 spans rejected: trace_id must be 16 bytes and span_id 8 bytes, "
            "neither all zeros",
        }
    }


def test_gzip_bodies_are_inflated(stalled) -> None:
    body = gzip.compress(request_with_spans(2).SerializeToString())
    status, _, _ = post(stalled.http_url, body, **{"Content-Encoding": "gzip"})
    assert status == 200 and stalled.queue.depth == 2
    doc = gzip.compress(json.dumps(_json_request(["4bf92f3577b34da6a3ce929d0e0e4736"])).encode())
    status, body, _ = post(stalled.http_url, doc, "application/json", **{"Content-Encoding": "gzip"})
    assert (status, body) == (200, b"{}") and stalled.queue.depth == 3


def test_malformed_protobuf_gets_400_with_a_status_body(stalled) -> None:
    status, body, headers = post(stalled.http_url, b"\x0a\xff\xff\xff\x0f garbage")
    assert status == 400 and headers["Content-Type"] == PB
    rpc = status_pb2.Status.FromString(body)
    assert rpc.code == 3
    assert rpc.message.startswith("cannot decode ExportTraceServiceRequest: ")
    assert stalled.stats.export_requests["http", "invalid"] == 1


def test_malformed_json_gets_400_naming_the_position(stalled) -> None:
    status, body, headers = post(stalled.http_url, b'{"resourceSpans": [', "application/json")
    assert (status, headers["Content-Type"]) == (400, "application/json")
    assert json.loads(body) == {
        "code": 3,
        "message": "body is not valid JSON: Expecting value at line 1, column 20",
    }
    status, body, _ = post(stalled.http_url, b'{"resourceSpans": [{"scopeSpans": 5}]}', "application/json")
    assert status == 400
    assert json.loads(body)["message"].startswith("not an OTLP ExportTraceServiceRequest: ")


def test_corrupt_gzip_is_400(stalled) -> None:
    status, body, _ = post(stalled.http_url, b"not gzip at all", **{"Content-Encoding": "gzip"})
    assert status == 400
    assert status_pb2.Status.FromString(body).message == (
        "body is not valid gzip: Error -3 while decompressing data: incorrect header check"
    )
    truncated = gzip.compress(request_with_spans(2).SerializeToString())[:-12]
    status, body, _ = post(stalled.http_url, truncated, **{"Content-Encoding": "gzip"})
    assert (status, status_pb2.Status.FromString(body).message) == (400, "gzip body is truncated")


def test_oversized_body_is_413_without_reading_it(stalled) -> None:
    status, body, headers = post(stalled.http_url, b"\x00" * (64 * 1024 + 1))
    assert status == 413 and headers["Connection"] == "close"
    assert status_pb2.Status.FromString(body).message == (
        "body of 65537 bytes is larger than the limit of 65536 bytes"
    )


def test_gzip_bomb_is_refused_not_inflated(stalled) -> None:
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024))  # 50 MiB of zeros in ~50 KiB
    assert len(bomb) < 64 * 1024
    status, body, _ = post(stalled.http_url, bomb, **{"Content-Encoding": "gzip"})
    assert status == 413
    assert status_pb2.Status.FromString(body).message == (
        "decompressed body is larger than the limit of 65536 bytes"
    )


def test_full_queue_answers_503_with_retry_after(stalled) -> None:
    assert post(stalled.http_url, request_with_spans(8).SerializeToString())[0] == 200
    status, body, headers = post(stalled.http_url, request_with_spans(3).SerializeToString())
    assert (status, headers["Retry-After"]) == (503, "7")
    assert status_pb2.Status.FromString(body).code == 14
    assert stalled.queue.depth == 8
    assert stalled.stats.spans_rejected["queue_full"] == 3
    # JSON clients get the same answer in JSON.
    doc = json.dumps(_json_request(["4bf92f3577b34da6a3ce929d0e0e4736"] * 3)).encode()
    status, body, headers = post(stalled.http_url, doc, "application/json")
    assert (status, headers["Retry-After"], json.loads(body)["code"]) == (503, "7", 14)


def test_unsupported_content_type_and_encoding_are_415(stalled) -> None:
    status, body, _ = post(stalled.http_url, b"x", "text/plain")
    assert status == 415
    assert status_pb2.Status.FromString(body).message == (
        "unsupported Content-Type 'text/plain'; use application/x-protobuf or application/json"
    )
    status, body, _ = post(stalled.http_url, b"x", **{"Content-Encoding": "br"})
    assert status == 415
    assert status_pb2.Status.FromString(body).message == (
        "unsupported Content-Encoding 'br'; use gzip or none"
    )


def test_wrong_path_is_404(stalled) -> None:
    # /v1/metrics and /v1/logs are passed through (tests/processor/exporters/test_forward_signals.py).
    status, body, _ = post(stalled.http_url.replace("/v1/traces", "/v1/trace"), b"")
    assert status == 404
    assert status_pb2.Status.FromString(body).message == (
        "no such path '/v1/trace'; OTLP/HTTP exports go to /v1/traces "
        "(metrics to /v1/metrics, logs to /v1/logs)"
    )
