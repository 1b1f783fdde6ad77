"""OTLP/HTTP receiver: `POST /v1/traces` with protobuf or JSON bodies, optionally gzipped; `/v1/metrics`
and `/v1/logs` are passed through to the OTLP exporter (passthrough.py)."""

from __future__ import annotations

import asyncio
import json

from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .. import selfmetrics
from .._httpserver import (
    BodyTooLarge,
    HttpServer,
    Limits,
    Reply,
    Request,
    Served,
    server_tls_context,
)
from ..config import HttpProtocol
from ..telemetry import ExportOutcome
from .auth import Authenticator
from .intake import RPC_CODES, Intake, Outcome
from .passthrough import INLINE_BYTES, holds_events
from .payload import InvalidPayload, PayloadTooLarge, inflate_gzip, json_to_protobuf

__all__ = ["HttpReceiver"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"
#: The signal of each OTLP/HTTP path (the OTLP specification's defaults).
SIGNAL_PATHS = {TRACES_PATH: "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
TRANSPORT = "http"

# HTTP status per refusal (OTLP spec: 400, 413, 503 + Retry-After); the body's code is RPC_CODES'.
_STATUS = {
    ExportOutcome.INVALID: 400,
    ExportOutcome.TOO_LARGE: 413,
    ExportOutcome.UNSUPPORTED: 415,
    ExportOutcome.QUEUE_FULL: 503,
    ExportOutcome.MEMORY_LIMIT: 503,
    ExportOutcome.STATE_BACKLOG: 503,
    ExportOutcome.SHUTTING_DOWN: 503,
    ExportOutcome.NOT_FOUND: 404,
    ExportOutcome.METHOD: 405,
    ExportOutcome.LENGTH_REQUIRED: 411,
    ExportOutcome.UNAUTHENTICATED: 401,
    ExportOutcome.UNAUTHORIZED_SERVICE: 403,
}


def _encode_status(code: int, message: str, content_type: str) -> bytes:
    if content_type == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    body: bytes = status_pb2.Status(code=code, message=message).SerializeToString()  # google.rpc: no stubs
    return body


def _encode_response(outcome: Outcome, content_type: str) -> bytes:
    if outcome.kind == "partial":
        if content_type == JSON:
            return json.dumps(
                {"partialSuccess": {"rejectedSpans": str(outcome.rejected), "errorMessage": outcome.message}}
            ).encode()
        response = ExportTraceServiceResponse()
        response.partial_success.rejected_spans = outcome.rejected
        response.partial_success.error_message = outcome.message
        return response.SerializeToString()
    return b"{}" if content_type == JSON else b""


class _Overloaded(Exception):
    """Memory (or the state backlog) ran short while a body was arriving: its counted refusal."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class _Receiver:
    """The OTLP/HTTP answers, from a request's headers first and its body only when needed."""

    def __init__(self, intake: Intake, limit: int, retry_after: int, auth: Authenticator | None) -> None:
        self.intake = intake
        self.limit = limit
        self.retry_after = retry_after
        self.auth = auth
        self._decoding = asyncio.Semaphore(DECODING)
        # Metrics and logs checked off the loop, at most this many at once: on slots of their own,
        # so that a flood of them never keeps a trace body waiting for its decoding.
        self._passing = asyncio.Semaphore(DECODING)
        self._in_flight = 0  # declared bytes of the bodies being read or scanned (one loop thread)
        self._in_flight_other = 0  # of which metrics and logs: they may take half of the room

    def _answer(self, outcome: Outcome, content_type: str, close: bool = False) -> Reply:
        if outcome.kind in ("success", "partial"):
            return Reply(200, _encode_response(outcome, content_type), content_type)
        status, code = _STATUS[outcome.kind], RPC_CODES[outcome.kind]
        headers = {}
        if status == 503:
            headers["Retry-After"] = str(self.retry_after)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="otlp"'
        return Reply(
            status, _encode_status(code, outcome.message, content_type), content_type, headers, close
        )

    def _refuse(self, kind: str, message: str, reply_type: str, close: bool = False) -> Reply:
        return self._answer(self.intake.refuse(TRANSPORT, kind, message), reply_type, close)

    def _still_room(self, signal: str = "traces") -> None:
        refused = self.intake.overloaded(TRANSPORT, signal)
        if refused is not None:
            raise _Overloaded(refused)

    async def handle(self, request: Request) -> Reply:
        headers = request.headers
        raw_type = headers.get("content-type", "")
        content_type = raw_type.split(";", 1)[0].strip().lower()
        reply_type = JSON if content_type == JSON else PROTOBUF
        if request.method != "POST":
            return self._refuse("method", "use POST /v1/traces", JSON)
        signal = SIGNAL_PATHS.get(request.path)
        if signal is None:
            return self._refuse(
                "not_found",
                f"no such path {request.path!r}; OTLP/HTTP exports go to {TRACES_PATH} "
                "(metrics to /v1/metrics, logs to /v1/logs)",
                reply_type,
            )
        refused = self.intake.overloaded(TRANSPORT, signal)
        if refused is not None:
            return self._answer(refused, reply_type)
        service = "*"
        if self.auth is not None:
            found = self.auth.service_for(headers.get("authorization"))
            if found is None:
                # Answered from the headers: the body is never read (the connection closes).
                return self._refuse("unauthenticated", "a valid bearer token is required", reply_type)
            service = found
        if content_type not in (PROTOBUF, JSON):
            return self._refuse(
                "unsupported", f"unsupported Content-Type {raw_type!r}; use {PROTOBUF} or {JSON}", reply_type
            )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            return self._refuse(
                "unsupported", f"unsupported Content-Encoding {encoding!r}; use gzip or none", reply_type
            )
        chunked = "transfer-encoding" in headers  # httptools accepts only a final `chunked`
        length = headers.get("content-length")
        if length is None and not chunked:
            return self._refuse(
                "length_required", "a Content-Length header is required", reply_type, close=True
            )
        declared = int(length.strip()) if length is not None else 0  # httptools checked the digits
        if declared > self.limit:
            # Do not read a body we will refuse; closing the connection discards it.
            return self._refuse(
                "too_large",
                f"body of {declared} bytes is larger than the limit of {self.limit} bytes",
                reply_type,
                close=True,
            )
        # Bodies being read are memory the limiter has not seen yet: admit one only while the
        # bodies already in flight leave room for it under the soft limit (the first always goes).
        room = self.intake.memory_room()
        other = declared if signal != "traces" else 0
        if room is not None and (
            (self._in_flight and self._in_flight + declared > room)
            or (other and self._in_flight_other and self._in_flight_other + other > room // 2)
        ):
            return self._answer(self.intake.refuse_over_memory(TRANSPORT), reply_type, close=True)
        self._in_flight += declared
        self._in_flight_other += other
        try:
            return await self._read_and_accept(
                request, declared, encoding, content_type, reply_type, service, signal
            )
        finally:
            self._in_flight -= declared
            self._in_flight_other -= other

    async def _read_and_accept(
        self,
        request: Request,
        declared: int,
        encoding: str,
        content_type: str,
        reply_type: str,
        service: str,
        signal: str = "traces",
    ) -> Reply:
        checks = 0

        def still_room() -> None:
            nonlocal checks
            checks += 1
            # The n-th check comes once n MiB have arrived. With the whole declared body in, a
            # refusal saves nothing, and a trace body is asked about again when it is queued
            # (Intake.accept, on a reading taken then).
            if signal == "traces" and declared and checks * _CHECK_EVERY >= declared:
                return
            self._still_room(signal)

        try:
            # The memory limiter (and the state backlog) is asked again every MiB: bodies admitted
            # while memory was low would otherwise all be read in full, and a body without a
            # declared length is not in the admission above at all.
            body = await request.body(self.limit, still_room, _CHECK_EVERY)
        except BodyTooLarge as exc:
            return self._refuse("too_large", str(exc), reply_type, close=True)
        except _Overloaded as exc:
            return self._answer(exc.outcome, reply_type, close=True)
        if signal != "traces":
            return await self._pass_through(
                signal, body, encoding == "gzip", content_type, reply_type, service
            )
        try:
            if encoding == "gzip" or content_type == JSON:
                # Inflating makes up to max_request_body_size and parsing JSON about 4 times its size:
                # at most DECODING at once, each only while memory allows.
                async with self._decoding:
                    self._still_room()
                    body = await asyncio.to_thread(
                        _decode,
                        body,
                        encoding == "gzip",
                        content_type == JSON,
                        self.limit,
                        self.intake.max_spans,
                    )
        except _Overloaded as exc:
            return self._answer(exc.outcome, reply_type)
        except PayloadTooLarge as exc:
            return self._refuse("too_large", str(exc), reply_type)
        except InvalidPayload as exc:
            return self._refuse("invalid", str(exc), reply_type)
        if len(body) > _INLINE_SCAN:  # a long scan would stall every other connection's loop
            outcome = await asyncio.to_thread(self.intake.accept, body, TRANSPORT, service)
        else:
            outcome = self.intake.accept(body, TRANSPORT, service)
        return self._answer(outcome, reply_type)

    async def _pass_through(
        self, signal: str, body: bytes, gzipped: bool, content_type: str, reply_type: str, service: str
    ) -> Reply:
        """A metrics or logs request: checked (size after inflation, framing, service) and handed on
        as it came, so a gzipped body is forwarded gzipped."""

        def check() -> Outcome:
            plain = inflate_gzip(body, self.limit) if gzipped else body
            return self.intake.pass_through(signal, body, TRANSPORT, service, content_type, gzipped, plain)

        try:
            # Feedback or flag evaluations in a logs body are decoded in Python: off the loop too,
            # however small.
            events = signal == "logs" and holds_events(body)
            if gzipped or content_type == JSON or len(body) > INLINE_BYTES or events:
                async with self._passing:  # inflating, parsing: bounded in threads and memory
                    self._still_room(signal)
                    outcome = await asyncio.to_thread(check)
            else:
                outcome = check()
        except _Overloaded as exc:
            return self._answer(exc.outcome, reply_type)
        except PayloadTooLarge as exc:
            return self._refuse("too_large", str(exc), reply_type)
        except InvalidPayload as exc:
            return self._refuse("invalid", str(exc), reply_type)
        return self._answer(outcome, reply_type)


# gzip or JSON bodies decoded at once (each on a worker thread).
DECODING = 2

# Body bytes between two checks of the memory limiter while a body is read.
_CHECK_EVERY = 1 << 20

# Bodies up to this size are scanned on the event loop (a 300 KB batch takes about 0.3 ms);
# larger ones on a worker thread.
_INLINE_SCAN = 1 << 20


def _decode(body: bytes, gzipped: bool, json_body: bool, limit: int, max_spans: int) -> bytes:
    if gzipped:
        body = inflate_gzip(body, limit)
    return json_to_protobuf(body, max_spans) if json_body else body


def _limits(config: HttpProtocol, intake: Intake) -> Limits:
    def refused(kind: str, message: str) -> None:
        intake.refuse(TRANSPORT, kind, message)

    return Limits(
        max_connections=config.max_connections,
        header_timeout=float(config.header_timeout),
        body_timeout=float(config.body_timeout),
        idle_timeout=float(config.idle_timeout),
        on_refused=refused,
    )


class HttpReceiver(Served):
    """OTLP/HTTP: a component (component.py) whose port is bound when built."""

    families = selfmetrics.owned_by("receivers")

    def __init__(
        self, config: HttpProtocol, intake: Intake, retry_after: float, auth: Authenticator | None = None
    ) -> None:
        receiver = _Receiver(intake, int(config.max_request_body_size), max(1, int(retry_after)), auth)
        tls = config.tls
        context = (
            server_tls_context(tls.cert_file, tls.key_file, tls.client_ca_file) if tls is not None else None
        )
        self._server = HttpServer(
            config.endpoint,
            receiver.handle,
            "receivers.otlp.protocols.http.endpoint",
            "otlp-http",
            context,
            _limits(config, intake),
        )
