"""OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, optionally gzipped."""

from __future__ import annotations

import json

from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .._httpserver import HttpServer, QuietHandler, Served, server_tls_context
from ..config import HttpProtocol
from .auth import Authenticator
from .intake import Intake, Outcome
from .payload import InvalidPayload, PayloadTooLarge, inflate_gzip, json_to_protobuf

__all__ = ["HttpReceiver"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"
TRANSPORT = "http"

# HTTP status and google.rpc code per outcome (OTLP spec: 400 INVALID_ARGUMENT, 413, 503 + Retry-After).
_ERRORS = {
    "invalid": (400, 3),
    "too_large": (413, 8),
    "unsupported": (415, 3),
    "queue_full": (503, 14),
    "memory_limit": (503, 14),
    "state_backlog": (503, 14),
    "shutting_down": (503, 14),
    "not_found": (404, 5),
    "method": (405, 12),
    "length_required": (411, 3),
    "unauthenticated": (401, 16),
}


def _encode_status(code: int, message: str, content_type: str) -> bytes:
    if content_type == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    return status_pb2.Status(code=code, message=message).SerializeToString()


def _encode_response(outcome: Outcome, content_type: str) -> bytes:
    if outcome.kind == "partial":
        if content_type == JSON:
            return json.dumps({"partialSuccess": {"rejectedSpans": str(outcome.rejected),
                                                  "errorMessage": outcome.message}}).encode()
        response = ExportTraceServiceResponse()
        response.partial_success.rejected_spans = outcome.rejected
        response.partial_success.error_message = outcome.message
        return response.SerializeToString()
    return b"{}" if content_type == JSON else b""


class _Handler(QuietHandler):
    intake: Intake
    limit: int
    retry_after: int
    auth: Authenticator | None

    def _answer(self, outcome: Outcome, content_type: str, close: bool = False) -> None:
        headers = {"Connection": "close"} if close else {}
        if outcome.kind in ("success", "partial"):
            self.send_body(200, _encode_response(outcome, content_type), content_type, headers)
            return
        status, code = _ERRORS[outcome.kind]
        if status == 503:
            headers["Retry-After"] = str(self.retry_after)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="otlp"'

        if close:
            self.close_connection = True
        self.send_body(status, _encode_status(code, outcome.message, content_type), content_type,
                       headers)

    def do_GET(self) -> None:
        self._answer(Outcome("method", message="use POST /v1/traces"), JSON)

    def do_POST(self) -> None:
        raw_type = self.headers.get("Content-Type", "")
        content_type = raw_type.split(";", 1)[0].strip().lower()
        reply_type = JSON if content_type == JSON else PROTOBUF
        if self.path.split("?", 1)[0] != TRACES_PATH:
            self._discard_body()
            self._answer(self.intake.refuse(TRANSPORT, "not_found",
                                            f"no such path {self.path!r}; OTLP traces go to "
                                            f"{TRACES_PATH}"), reply_type)
            return
        refused = self.intake.overloaded(TRANSPORT)
        if refused is not None:
            self._discard_body()
            self._answer(refused, reply_type)
            return
        service = "*"
        if self.auth is not None:
            found = self.auth.service_for(self.headers.get("Authorization"))
            if found is None:
                self._discard_body()
                self._answer(self.intake.refuse(TRANSPORT, "unauthenticated",
                                                "a valid bearer token is required"), reply_type)
                return
            service = found
        body = self._read_body(reply_type)
        if body is None:
            return
        if content_type not in (PROTOBUF, JSON):
            self._answer(self.intake.refuse(
                TRANSPORT, "unsupported",
                f"unsupported Content-Type {raw_type!r}; use {PROTOBUF} or {JSON}"), reply_type)
            return
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        try:
            if encoding == "gzip":
                body = inflate_gzip(body, self.limit)
            elif encoding not in ("identity", ""):
                self._answer(self.intake.refuse(
                    TRANSPORT, "unsupported",
                    f"unsupported Content-Encoding {encoding!r}; use gzip or none"), reply_type)
                return
            if content_type == JSON:
                body = json_to_protobuf(body)
        except PayloadTooLarge as exc:
            self._answer(self.intake.refuse(TRANSPORT, "too_large", str(exc)), reply_type)
            return
        except InvalidPayload as exc:
            self._answer(self.intake.refuse(TRANSPORT, "invalid", str(exc)), reply_type)
            return
        self._answer(self.intake.accept(body, TRANSPORT, service), reply_type)

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.limit:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _read_body(self, reply_type: str) -> bytes | None:
        """The raw body, or None after answering 411/413/400 (the connection then closes)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(reply_type)
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self._answer(self.intake.refuse(TRANSPORT, "length_required",
                                            "a Content-Length header is required"),
                         reply_type, close=True)
            return None
        n = int(length)
        if n > self.limit:
            # Do not read a body we will refuse; closing the connection discards it.
            self._answer(self.intake.refuse(
                TRANSPORT, "too_large", f"body of {n} bytes is larger than the limit of "
                                        f"{self.limit} bytes"), reply_type, close=True)
            return None
        body = self.rfile.read(n)
        if len(body) != n:
            self.close_connection = True
            return None
        return body

    def _read_chunked(self, reply_type: str) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self._answer(self.intake.refuse(TRANSPORT, "invalid", "malformed chunked body"),
                             reply_type, close=True)
                return None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > self.limit:
                self._answer(self.intake.refuse(
                    TRANSPORT, "too_large",
                    f"body is larger than the limit of {self.limit} bytes"), reply_type, close=True)
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline(8)


class HttpReceiver(Served):
    def __init__(self, config: HttpProtocol, intake: Intake, retry_after: float,
                 auth: Authenticator | None = None) -> None:
        handler = type("OtlpHttpHandler", (_Handler,), {
            "intake": intake, "limit": int(config.max_request_body_size),
            "retry_after": max(1, int(retry_after)), "auth": auth,
        })
        tls = config.tls
        context = (server_tls_context(tls.cert_file, tls.key_file, tls.client_ca_file)
                   if tls is not None else None)
        self._server = HttpServer(config.endpoint, handler,
                                  "receivers.otlp.protocols.http.endpoint", "otlp-http", context,
                                  max_connections=config.max_connections)
