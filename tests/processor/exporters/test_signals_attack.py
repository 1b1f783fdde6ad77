"""Hostile clients and backends against the pass-through of metrics and logs (atk2).

Each test here failed on the pass-through as first built: a logs flood took the whole forward queue
so traces were dropped, a shutdown left queued requests uncounted, a service-bound token could send
for another service by naming two, an invalid JSON body was acknowledged and forwarded, and a
backend's Retry-After was not waited for.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from apiusage.processor.config import OtlpForwarder
from apiusage.processor.exporters.otlp_forward import DROPPED, QUEUED, Forwarder
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.processor.exporters.test_forward_signals import AUTH, TOKEN, export_requests, forwarded, post
from tests.support.hostile_backends import ScriptedBackend, _read_request, answer_endless
from tests.support.otlp import request_with_spans
from tests.support.otlp_sink import OtlpSink
from tests.support.polling import poll
from tests.support.processor import running_processor, wait_for

pytestmark = pytest.mark.slow  # floods, bombs and slow clients against real servers


def logs_body(*services: str, records: int = 1) -> bytes:
    """One ResourceLogs whose Resource carries `service.name` once per value given, in order."""
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    for service in services:
        kv = rl.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", service
    for i in range(records):
        rl.scope_logs.add().log_records.add().body.string_value = f"record {i}"
    return request.SerializeToString()


def forwarder(endpoint: str, **settings) -> Forwarder:
    return Forwarder(OtlpForwarder(endpoint=endpoint, **settings))


def test_a_logs_flood_leaves_traces_their_share_of_the_forward_queue() -> None:
    sink = OtlpSink()
    sink.hold.clear()  # the backend takes the first request and never answers
    fwd = forwarder(sink.endpoint, max_queue_requests=10, max_queue_bytes=10_000, timeout=30)
    fwd.start()
    try:
        assert fwd.forward(logs_body("a"), "logs") == QUEUED
        assert sink.arrived.wait(10)
        flood = [fwd.forward(logs_body("a"), "logs") for _ in range(100)]
        traces = [fwd.forward(request_with_spans(1).SerializeToString()) for _ in range(5)]
    finally:
        sink.close()
        fwd.stop(1)
    # Metrics and logs together take at most half the queue; traces always find the other half.
    assert flood.count(QUEUED) == 5
    assert flood.count(DROPPED) == 95
    assert traces == [QUEUED] * 5
    assert fwd.outcomes["traces"]["dropped"] == 0


def test_a_logs_flood_over_http_does_not_drop_the_forwarding_of_traces() -> None:
    sink = OtlpSink()
    sink.hold.clear()
    config = {"exporters": {"otlp": {"endpoint": sink.endpoint, "timeout": "30s", "max_queue_requests": 20}}}
    try:
        with running_processor(config) as running:
            base = running.http_endpoint
            assert post(f"{base}/v1/logs", logs_body("a"))[0] == 200
            assert sink.arrived.wait(10)
            answers = [post(f"{base}/v1/logs", logs_body("a"))[0] for _ in range(60)]
            trace = post(f"{base}/v1/traces", request_with_spans(2).SerializeToString())[0]
            m = running.wait_processed(2)
            sink.hold.set()
    finally:
        sink.close()
    assert answers == [200] * 10 + [503] * 50
    assert trace == 200
    assert forwarded(m, "traces") == {"success": 0, "failure": 0, "dropped": 0}
    assert forwarded(m, "logs") == {"success": 0, "failure": 0, "dropped": 50}


def test_stop_with_a_full_queue_of_mixed_signals_counts_every_request_within_its_deadline() -> None:
    sink = OtlpSink()
    sink.hold.clear()
    fwd = forwarder(sink.endpoint, timeout=30)
    fwd.start()
    sent = {"traces": 0, "metrics": 0, "logs": 0}
    try:
        for i in range(30):
            signal = ("traces", "metrics", "logs")[i % 3]
            assert fwd.forward(logs_body("a") if signal != "traces" else b"", signal) == QUEUED
            sent[signal] += 1
        assert sink.arrived.wait(10)
        started = time.monotonic()
        fwd.stop(1)
        took = time.monotonic() - started
    finally:
        sink.close()
    assert took < 2.5
    # Every request handed over is accounted for: none was sent, so each one failed.
    assert {s: sum(o.values()) for s, o in fwd.outcomes.items()} == sent
    assert {s: o["failure"] for s, o in fwd.outcomes.items()} == sent
    assert fwd.depth == 0
    assert fwd.queued_bytes == 0


class _Throttling(ThreadingHTTPServer):
    """Answers the first request 429 with Retry-After: 2, then 200; records when each arrived."""

    daemon_threads = True

    def __init__(self) -> None:
        self.arrivals: list[float] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(handler) -> None:  # noqa: N805
                handler.rfile.read(int(handler.headers["Content-Length"]))
                self.arrivals.append(time.monotonic())
                first = len(self.arrivals) == 1
                handler.send_response(429 if first else 200)
                if first:
                    handler.send_header("Retry-After", "2")
                handler.send_header("Content-Length", "0")
                handler.end_headers()

            def log_message(handler, *args: object) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_a_backend_asking_to_retry_after_two_seconds_is_not_retried_sooner() -> None:
    backend = _Throttling()
    fwd = forwarder(backend.endpoint, timeout=5)
    fwd.start()
    try:
        assert fwd.forward(logs_body("a"), "logs") == QUEUED
        poll(lambda: fwd.outcomes["logs"]["success"], 10)
    finally:
        fwd.stop(1)
        backend.shutdown()
        backend.server_close()
    assert len(backend.arrivals) == 2
    assert backend.arrivals[1] - backend.arrivals[0] >= 1.9
    assert fwd.outcomes["logs"] == {"success": 1, "failure": 0, "dropped": 0}


def test_a_bound_token_cannot_send_for_another_service_by_naming_two() -> None:
    """A Collector's attribute map returns the first of two equal keys, protobuf's merge of two
    `resource` fields keeps both attribute lists: any occurrence of another service is refused."""
    sink = OtlpSink()
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    twice = logs_body("billing-api", "orders-api")
    # Two `resource` fields in one ResourceLogs: protobuf concatenates their attributes.
    merged = ExportLogsServiceRequest.FromString(logs_body("orders-api"))
    first = ExportLogsServiceRequest.FromString(logs_body("billing-api")).resource_logs[0].resource
    entry = b"\x0a" + bytes([len(first.SerializeToString())]) + first.SerializeToString()
    inner = entry + merged.resource_logs[0].SerializeToString()
    two_resources = b"\x0a" + bytes([len(inner)]) + inner
    assert [kv.value.string_value for kv in ExportLogsServiceRequest.FromString(two_resources)
            .resource_logs[0].resource.attributes] == ["billing-api", "orders-api"]  # fmt: skip

    def as_json(*services: str) -> dict:
        attributes = [{"key": "service.name", "value": {"stringValue": s}} for s in services]
        return {"resource": {"attributes": attributes}}

    # Duplicate keys (a Collector's JSON reader appends repeated fields) and the snake_case name.
    dup_key = (
        '{"resourceLogs": [' + json.dumps(as_json("billing-api")) + '], "resourceLogs": ['
        + json.dumps(as_json("orders-api")) + "]}"
    ).encode()  # fmt: skip
    both_names = json.dumps(
        {"resource_logs": [as_json("billing-api")], "resourceLogs": [as_json("orders-api")]}
    ).encode()
    json_twice = json.dumps({"resourceLogs": [as_json("billing-api", "orders-api")]}).encode()
    both_spellings = json.dumps(
        {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [
                            {
                                "key": "service.name",
                                "value": {"stringValue": "orders-api", "string_value": "x"},
                            }
                        ]
                    }
                }
            ]
        }
    ).encode()
    json_headers = {**bearer, "Content-Type": "application/json"}
    try:
        with running_processor({**AUTH, "exporters": {"otlp": {"endpoint": sink.endpoint}}}) as running:
            url = f"{running.http_endpoint}/v1/logs"
            answers = [
                post(url, twice, bearer)[0],
                post(url, two_resources, bearer)[0],
                post(url, dup_key, json_headers)[0],
                post(url, both_names, json_headers)[0],
                post(url, json_twice, json_headers)[0],
                post(url, both_spellings, json_headers)[0],
                post(url, logs_body(), bearer)[0],  # no service.name
                post(url, logs_body(""), bearer)[0],  # an empty one
                post(url, logs_body("orders-api\x00"), bearer)[0],  # a control character after it
            ]
            own = post(url, logs_body("orders-api", "orders-api"), bearer)[0]
            got = sink.wait(1)
            m = running.scrape()
    finally:
        sink.close()
    assert answers == [403, 403, 400, 403, 403, 403, 403, 403, 403]
    assert own == 200
    assert [r.path for r in got] == ["/v1/logs"]
    assert export_requests(m, "http") == {"unauthorized_service": 8, "invalid": 1, "logs_forwarded": 1}


def test_a_json_body_that_is_not_json_is_refused_not_acknowledged_and_forwarded() -> None:
    sink = OtlpSink()
    json_type = {"Content-Type": "application/json"}
    try:
        with running_processor({"exporters": {"otlp": {"endpoint": sink.endpoint}}}) as running:
            url = f"{running.http_endpoint}/v1/logs"
            broken = post(url, b'{"resourceLogs": [', json_type)
            not_object = post(url, b"[1, 2]", json_type)
            good = post(url, b'{"resourceLogs": []}', json_type)
            got = sink.wait(1)
            m = wait_for(running, "apiusage_forwarded_requests_total", 1, signal="logs", outcome="success")
    finally:
        sink.close()
    assert (broken[0], not_object[0], good[0]) == (400, 400, 200)
    assert json.loads(broken[2])["message"] == (
        "cannot decode this logs export request: body is not valid JSON: Expecting value at line 1, column 19"
    )
    assert [r.body for r in got] == [b'{"resourceLogs": []}']
    assert export_requests(m, "http") == {"invalid": 2, "logs_forwarded": 1}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([low]))
        out.append(low | 0x80)


def attribute_bomb(size: int = 4 << 20) -> bytes:
    """A logs request of one resource with `size` bytes of tiny attributes (key "a", no value):
    valid protobuf, about 840,000 attributes for 4 MiB."""
    attributes = b"\x0a\x03\x0a\x01a" * (size // 5)
    entry = b"\x0a" + _varint(len(attributes)) + attributes
    return b"\x0a" + _varint(len(entry)) + entry


def test_a_resource_of_a_million_attributes_costs_no_more_than_protobuf_takes_to_parse_it() -> None:
    from apiusage.processor.receivers.passthrough import services_in_protobuf

    body = attribute_bomb()
    started = time.monotonic()
    assert services_in_protobuf(body, "logs") == [None]
    took = time.monotonic() - started
    started = time.monotonic()
    ExportLogsServiceRequest.FromString(body)
    parse = time.monotonic() - started
    # The walk in Python took 5.5 s here (50 times the parse), holding the GIL all along.
    assert took < max(1.0, 5 * parse)


def test_attribute_bombs_on_many_connections_leave_traces_answered() -> None:
    bomb = attribute_bomb()
    config = {"receivers": {"otlp": {"protocols": {"http": {"max_request_body_size": "8MiB"}}}}}
    with running_processor(config) as running:
        base = running.http_endpoint
        answers: list[int] = []
        senders = [
            threading.Thread(target=lambda: answers.append(post(f"{base}/v1/logs", bomb)[0]))
            for _ in range(12)
        ]
        for sender in senders:
            sender.start()
        time.sleep(0.5)  # the bombs are being walked
        started = time.monotonic()
        trace = post(f"{base}/v1/traces", request_with_spans(2).SerializeToString())[0]
        took = time.monotonic() - started
        for sender in senders:
            sender.join(120)
        m = running.wait_processed(2)
    assert trace == 200
    assert took < 2
    assert answers == [200] * 12
    assert export_requests(m, "http") == {"logs_not_forwarded": 12, "success": 1}


def _answer_once(status: bytes, *headers: bytes):
    """Answer one request with `status` (and `headers`), then close the connection."""

    def answer(conn, backend) -> None:
        if not _read_request(conn):
            return
        backend.requests += 1
        conn.sendall(b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
                     + b"Content-Length: 0\r\nConnection: close\r\n\r\n")  # fmt: skip

    return answer


def test_a_misbehaving_backend_is_counted_exactly_per_signal() -> None:
    backend = ScriptedBackend(
        [
            _answer_once(b"500 Internal Server Error"),  # not retryable
            _answer_once(
                b"307 Temporary Redirect", b"Location: http://127.0.0.1:1/v1/metrics"
            ),  # not followed
            answer_endless,  # a 200 whose 100 MiB body is not read: the status stands
            *[_answer_once(b"503 Service Unavailable", b"Retry-After: 0")] * 3,  # given up after 3
            _answer_once(b"200 OK"),
        ]
    )
    fwd = forwarder(f"http://127.0.0.1:{backend.port}", timeout=2)
    fwd.start()
    body = logs_body("a")
    try:
        for signal in ("logs", "metrics", "traces", "logs", "metrics"):
            assert fwd.forward(body, signal) == QUEUED
        poll(lambda: not (fwd.depth or fwd.queued_bytes), 20)
    finally:
        fwd.stop(1)
        backend.close()
    assert fwd.outcomes == {
        "traces": {"success": 1, "failure": 0, "dropped": 0},
        "metrics": {"success": 1, "failure": 1, "dropped": 0},
        "logs": {"success": 0, "failure": 2, "dropped": 0},
    }
    assert backend.requests == 7
    assert backend.body_sent < 10 << 20  # the endless answer was cut off


def test_slow_logs_bodies_leave_room_under_the_memory_limit_for_traces() -> None:
    """Bodies being read are admitted against the memory limiter's room; metrics and logs take at
    most half of it, so clients trickling large logs bodies cannot get every trace refused."""
    import socket

    from apiusage.processor.memory import rss_bytes

    # About 96 MiB of room under the soft limit (the process's own memory stays under it).
    limit_mib = (rss_bytes() >> 20) + 96 + 8
    limiter = {"limit_mib": limit_mib, "spike_limit_mib": 8, "check_interval": "50ms"}
    with running_processor({"processors": {"memory_limiter": limiter}}) as running:
        host, port = running.http_endpoint.removeprefix("http://").split(":")
        slow: list[socket.socket] = []
        try:
            for _ in range(30):  # 30 x 4 MiB declared: more than the room
                sock = socket.create_connection((host, int(port)), timeout=5)
                sock.sendall(
                    b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: 4194304\r\n\r\n\x0a"
                )
                slow.append(sock)
            time.sleep(0.5)
            trace = post(f"{running.http_endpoint}/v1/traces", request_with_spans(2).SerializeToString())
            m = running.scrape()
        finally:
            for sock in slow:
                sock.close()
    refused = export_requests(m, "http").get("memory_limit", 0)
    assert trace[0] == 200, (trace, export_requests(m, "http"))
    assert 0 < refused < 30  # some of the logs bodies were refused, the trace was not


def test_a_logs_body_larger_than_their_half_still_goes_when_no_other_waits() -> None:
    """Else an SDK would be told to retry a body that can never fit, for ever."""
    sink = OtlpSink()
    sink.hold.clear()
    fwd = forwarder(sink.endpoint, max_queue_bytes=10_000, timeout=30)
    fwd.start()
    try:
        big = logs_body("a" * 6_000)
        assert fwd.forward(big, "logs") == QUEUED  # with the backend, then alone in the queue
        assert sink.arrived.wait(10)
        assert fwd.forward(logs_body("a"), "logs") == DROPPED  # its half is taken
        assert fwd.forward(request_with_spans(1).SerializeToString()) == QUEUED
    finally:
        sink.close()
        fwd.stop(1)


def test_retry_after_values_a_backend_may_send() -> None:
    from apiusage.processor.exporters.otlp_forward import MAX_RETRY_AFTER, _retry_after

    assert _retry_after("2") == 2.0
    assert _retry_after(" 3 ") == 3.0
    assert _retry_after("9" * 5000) == MAX_RETRY_AFTER
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: at once
    assert _retry_after("Wed, 21 Oct 2099 07:28:00 GMT") == MAX_RETRY_AFTER
    # Unreadable: the usual back-off. "²" is a digit to str.isdigit() and a ValueError to float().
    for value in (None, "", "²", "-1", "1.5", "garbage", "Wed, 21 Oct 2015 07:28:00"):
        assert _retry_after(value) is None
