"""Trace forwarding: accepted requests reach a real OTLP/HTTP sink; a dead backend never stalls."""

from __future__ import annotations

import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.otlp import request_with_spans
from tests.support.processor import running_processor, sample


class Sink(ThreadingHTTPServer):
    """A real OTLP/HTTP receiver that records what it gets."""

    daemon_threads = True

    def __init__(self) -> None:
        self.bodies: list[tuple[str, str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler) -> None:  # noqa: N805
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                self.bodies.append((handler.path, handler.headers["Content-Type"], body))
                handler.send_response(200)
                handler.send_header("Content-Length", "0")
                handler.end_headers()

            def log_message(handler, *args: object) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(
        f"{url}/v1/traces", data=body, headers={"Content-Type": "application/x-protobuf"}
    )
    with urllib.request.urlopen(req, timeout=5) as response:
        return response.status


def test_accepted_requests_are_forwarded_in_order() -> None:
    sink = Sink()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    with running_processor({"exporters": {"otlp": {"endpoint": endpoint}}}) as running:
        sent = [request_with_spans(n) for n in (1, 2, 3)]
        for req in sent:
            assert post(running.http_endpoint, req.SerializeToString()) == 200
        deadline = time.monotonic() + 10
        while len(sink.bodies) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        m = running.scrape()
    sink.shutdown()
    sink.server_close()
    assert [(p, t) for p, t, _ in sink.bodies] == [("/v1/traces", "application/x-protobuf")] * 3
    assert [ExportTraceServiceRequest.FromString(b) for _, _, b in sink.bodies] == sent
    assert sample(m, "apiusage_forwarded_requests_total", signal="traces", outcome="success") == 3


def test_a_dead_backend_never_stalls_ingestion() -> None:
    config = {
        "exporters": {"otlp": {"endpoint": "http://127.0.0.1:1", "timeout": "1s", "max_queue_requests": 2}}
    }
    with running_processor(config) as running:
        body = request_with_spans(10).SerializeToString()
        start = time.monotonic()
        for _ in range(20):
            assert post(running.http_endpoint, body) == 200
        assert time.monotonic() - start < 5
        m = running.wait_processed(200)
        forwarded = {
            o: sample(m, "apiusage_forwarded_requests_total", signal="traces", outcome=o)
            for o in ("success", "failure", "dropped")
        }
        assert forwarded["success"] == 0
        assert forwarded["dropped"] >= 15  # the queue holds 2; one is being retried
        assert sum(forwarded.values()) + sample(m, "apiusage_forward_queue_requests") <= 20
