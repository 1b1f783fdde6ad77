"""A real OTLP/HTTP receiver on loopback, standing for the backend that `exporters.otlp` forwards to."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.polling import poll

REQUESTS: dict[str, type[Message]] = {
    "/v1/traces": ExportTraceServiceRequest,
    "/v1/metrics": ExportMetricsServiceRequest,
    "/v1/logs": ExportLogsServiceRequest,
}


@dataclass(frozen=True)
class Received:
    path: str
    content_type: str
    content_encoding: str | None
    body: bytes  # as it came over the wire

    def message(self) -> Message:
        """The export request, decoded as an OTLP receiver would (gzip, protobuf or JSON)."""
        body = gzip.decompress(self.body) if self.content_encoding == "gzip" else self.body
        cls = REQUESTS[self.path]
        if self.content_type == "application/json":
            return json_format.Parse(body, cls(), ignore_unknown_fields=True)
        return cls.FromString(body)


class OtlpSink(ThreadingHTTPServer):
    """Records every request and answers 200 with an empty export response; while `hold` is clear
    it answers nothing (a backend that accepts connections and never replies)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(handler) -> None:  # noqa: N805
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                self.received.append(
                    Received(
                        handler.path,
                        handler.headers["Content-Type"],
                        handler.headers.get("Content-Encoding"),
                        body,
                    )
                )
                self.arrived.set()
                self.hold.wait(60)
                handler.send_response(200)
                handler.send_header("Content-Type", "application/x-protobuf")
                handler.send_header("Content-Length", "0")
                handler.end_headers()

            def log_message(handler, *args: object) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def wait(self, n: int, timeout: float = 10) -> list[Received]:
        """Wait until `n` requests arrived; exactly `n`, in order."""
        poll(lambda: len(self.received) >= n, timeout, interval=0.02)
        assert len(self.received) == n, f"the sink got {len(self.received)} requests, expected {n}"
        return list(self.received)

    def close(self) -> None:
        self.hold.set()
        self.shutdown()
        self.server_close()
