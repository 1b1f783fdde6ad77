"""A hostile OTLP/gRPC sender over raw HTTP/2 (the `h2` package): it opens Export calls and stalls.

grpcio's own client always finishes what it starts, so it cannot send headers and part of a
message and then stop; this one can, and it records what the server answered on each stream.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class StreamAnswer:
    """What the server sent on one stream: its (trailing) headers, or a reset."""

    headers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None  # the RST_STREAM error code
    ended: bool = False

    @property
    def grpc_status(self) -> str | None:
        return self.headers.get("grpc-status")


class StallingClient:
    """One HTTP/2 connection to a gRPC server that opens Export calls and never completes them."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.authority = f"{host}:{port}"
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.answers: dict[int, StreamAnswer] = {}
        self.closed = False  # the server closed the connection (GOAWAY or EOF)
        self._flush()

    def open_call(self, declared_length: int | None = None, sent: int = 0) -> int:
        """Send an Export call's headers and, when `declared_length` is given, the 5-byte gRPC message
        prefix announcing that many bytes followed by only `sent` of them; returns the stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", METHOD),
                (":authority", self.authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
        )
        if declared_length is not None:
            self.conn.send_data(stream_id, b"\x00" + struct.pack(">I", declared_length) + b"\x0a" * sent)
        self.answers[stream_id] = StreamAnswer()
        self._flush()
        return stream_id

    def reset(self, stream_id: int) -> None:
        """Cancel a call, as a sender that gives up does (RST_STREAM CANCEL)."""
        self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    def end(self, stream_id: int) -> None:
        """Half-close a call (END_STREAM) without sending anything more."""
        self.conn.end_stream(stream_id)
        self._flush()

    def pump(self, seconds: float) -> None:
        """Read and answer (SETTINGS/PING acks) the server's frames for up to `seconds`."""
        deadline = time.monotonic() + seconds
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                self.closed = True
                return
            if not data:
                self.closed = True
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                return
            for event in events:
                self._record(event)
            self._flush()

    def wait_answered(self, stream_ids: list[int], timeout: float) -> None:
        """Pump until every stream in `stream_ids` is ended or reset, or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closed:
            if all(self.answers[s].ended or self.answers[s].reset is not None for s in stream_ids):
                return
            self.pump(0.2)

    def _record(self, event: h2.events.Event) -> None:
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            self.answers[event.stream_id].headers.update(dict(event.headers))
        elif isinstance(event, h2.events.StreamEnded):
            self.answers[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            if event.stream_id in self.answers:
                self.answers[event.stream_id].reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed = True

    def close(self) -> None:
        self.sock.close()
