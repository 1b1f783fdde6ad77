"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, and the metrics and
logs services (`MetricsService/Export`, `LogsService/Export`), whose requests are passed through to the
OTLP exporter unparsed (passthrough.py).

The method is registered without a request deserializer, so the handler gets
the raw protobuf bytes and the scanner reads them directly: protobuf never
builds a Python object per span.  grpc-encoding gzip and the message size
limit (checked after decompression) are handled by gRPC itself.

The server is grpc.aio on an event loop of its own thread.  Export is
registered as client-streaming so the handler runs as soon as a call's headers
arrive and can put a deadline on receiving the message: a caller that stalls
holds a coroutine for at most `receive_timeout`, never a thread, and takes no
slot from callers whose message has arrived.  Each HTTP/2 connection may open
at most `max_concurrent_streams` calls at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent import futures
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .. import selfmetrics
from .._httpserver import BindError
from ..config import GrpcProtocol, TlsConfig, split_endpoint
from .auth import Authenticator
from .intake import RPC_CODES, Intake, Outcome
from .passthrough import INLINE_BYTES, PASSED_THROUGH, holds_events

__all__ = ["GrpcReceiver", "SERVICE", "METHOD", "SERVICES"]

log = logging.getLogger(__name__)

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
#: The signal of each OTLP export service.
SERVICES = {
    SERVICE: "traces",
    "opentelemetry.proto.collector.metrics.v1.MetricsService": "metrics",
    "opentelemetry.proto.collector.logs.v1.LogsService": "logs",
}
METHOD = "Export"
TRANSPORT = "grpc"
# Calls in flight at shutdown may finish within this (they end in the queue, which then drains).
GRACE = 2.0
MiB = 1 << 20
# A connection that has not finished its HTTP/2 (and TLS) handshake by then is closed.
HANDSHAKE_TIMEOUT_MS = 10_000
RESET_NOTICE_WAIT = 0.1
EMPTY_CALL = "the call ended without an ExportTraceServiceRequest message"
# A message larger than this is let in only if memory still allows when it has arrived.
RECHECK_BYTES = 1 << 20


def _credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    with open(tls.cert_file, "rb") as cert, open(tls.key_file, "rb") as key:
        pair = (key.read(), cert.read())
    ca = None
    if tls.client_ca_file:
        with open(tls.client_ca_file, "rb") as f:
            ca = f.read()
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


R = TypeVar("R")
_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


async def _read_within(context: grpc.aio.ServicerContext[bytes, bytes], seconds: float) -> object:
    """The call's one message (or grpc.aio.EOF); asyncio.TimeoutError after `seconds`."""
    if _timeout is None:  # Python 3.10: wait_for costs a task per call
        return await asyncio.wait_for(context.read(), seconds)
    async with _timeout(seconds):
        return await context.read()


class GrpcReceiver:
    """OTLP/gRPC: a component (component.py) whose port is bound when built."""

    name = "otlp-grpc"
    families = selfmetrics.owned_by("receivers")

    def __init__(
        self, config: GrpcProtocol, intake: Intake, retry_after: float, auth: Authenticator | None = None
    ) -> None:
        self._intake = intake
        self._auth = auth
        self._retry_after = max(1, int(retry_after))
        self._receive_timeout = float(config.receive_timeout)
        self._timeout_message = (
            f"the export message was not received within {config.receive_timeout:g}s "
            "(receivers.otlp.protocols.grpc.receive_timeout)"
        )
        self._max_pending = config.max_pending_calls
        self._evicted_message = (
            f"more than {config.max_pending_calls} calls were waiting for their message "
            "(receivers.otlp.protocols.grpc.max_pending_calls) and this one had waited "
            "longest; retry later"
        )
        # Calls waiting for their message, oldest first (dicts keep insertion order).
        self._waiting: dict[asyncio.Task[Any], None] = {}
        self._evicted: set[asyncio.Task[Any]] = set()
        # Large metrics and logs messages checked off the loop, two at once (bounded threads).
        self._passing = asyncio.Semaphore(2)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="otlp-grpc", daemon=True)
        self._thread.start()
        try:
            self._server, self.port = self._call(self._bind(config))
        except BaseException:
            self._close_loop()
            raise
        if self.port == 0:
            self._call(self._server.stop(0))
            self._close_loop()
            raise BindError(
                0,
                f"cannot listen on {config.endpoint} "
                "(receivers.otlp.protocols.grpc.endpoint): the port is in use or "
                "the address is not local; set it to a free host:port",
            )

    def _call(self, coroutine: Coroutine[Any, Any, R], timeout: float | None = 30) -> R:
        """Run `coroutine` on the receiver's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _bind(self, config: GrpcProtocol) -> tuple[grpc.aio.Server, int]:
        # grpc.aio objects belong to the loop they are made on: make them on ours.
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.max_recv_msg_size_mib * MiB),
                ("grpc.so_reuseport", 0),
                # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: one connection cannot hold more calls than this.
                ("grpc.max_concurrent_streams", config.max_concurrent_streams),
                ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
                # Connections are bounded, and a connection with no call for max_connection_idle gets
                # a GOAWAY (exporters reconnect on their next export), so silent ones free their slot.
                ("grpc.max_allowed_incoming_connections", config.max_connections),
                ("grpc.max_connection_idle_ms", int(config.max_connection_idle * 1000)),
            ]
        )
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(
                    service, {METHOD: grpc.stream_unary_rpc_method_handler(self._exporter(signal))}
                )
                for service, signal in SERVICES.items()
            )
        )
        host, port = split_endpoint(config.endpoint)
        if not host:
            address = f"[::]:{port}"  # ":4317", as in the Collector: every interface
        else:
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if config.tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, _credentials(config.tls))
        except RuntimeError:
            bound = 0
        return server, bound

    def _exporter(
        self, signal: str
    ) -> Callable[[AsyncIterator[bytes], grpc.aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
        """The Export handler of one signal's service."""

        async def export(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> bytes:
            return await self._export(requests, context, signal)

        return export

    async def _export(
        self,
        requests: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext[bytes, bytes],
        signal: str = "traces",
    ) -> bytes:
        service = "*"
        if self._auth is not None:
            metadata = dict(context.invocation_metadata() or ())
            authorization = metadata.get("authorization")  # str: only `-bin` keys carry bytes
            found = self._auth.service_for(authorization if isinstance(authorization, str) else None)
            if found is None:
                self._intake.refuse(TRANSPORT, "unauthenticated", "")
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
            service = found
        outcome = self._intake.overloaded(TRANSPORT, signal)
        if outcome is None:
            received = await self._receive(context, signal)
            if not isinstance(received, Outcome) and len(received) > RECHECK_BYTES:
                # The limiter was asked when the call began; a large message may have taken
                # receive_timeout to arrive, and many may arrive together.
                received = self._intake.overloaded(TRANSPORT, signal) or received
            # Scanning holds the GIL either way; on the loop it costs no thread hand-off.
            if isinstance(received, Outcome):
                outcome = received
            elif signal == "traces":
                outcome = self._intake.accept(received, TRANSPORT, service)
            elif len(received) > INLINE_BYTES or (signal == "logs" and holds_events(received)):
                # Off the loop: a large body, or feedback or flag evaluations, decoded in Python.
                async with self._passing:
                    outcome = await asyncio.to_thread(
                        self._intake.pass_through, signal, received, TRANSPORT, service
                    )
            else:  # gRPC has inflated it: forwarded as plain protobuf
                outcome = self._intake.pass_through(signal, received, TRANSPORT, service)
        if outcome.kind == "success":
            return b""
        if outcome.kind == "partial":
            response = ExportTraceServiceResponse()
            response.partial_success.rejected_spans = outcome.rejected
            response.partial_success.error_message = outcome.message
            return response.SerializeToString()
        await self._abort(outcome, context)
        return b""  # not reached: abort raises

    async def _receive(
        self, context: grpc.aio.ServicerContext[bytes, bytes], signal: str = "traces"
    ) -> bytes | Outcome:
        """The call's message, or the (counted) refusal when it does not arrive."""
        task = asyncio.current_task()
        if task is None:  # gRPC runs every handler in a task; a bare coroutine cannot be evicted
            raise RuntimeError("GrpcReceiver._receive must run in an asyncio task")
        if len(self._waiting) >= self._max_pending:
            # Bound the calls still waiting for their message by ending the one that has waited
            # longest, not by refusing the newest: stalled senders cannot keep anyone out.
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            self._evicted.add(oldest)
            oldest.cancel()
        self._waiting[task] = None
        try:
            request = await _read_within(context, self._receive_timeout)
            if request is grpc.aio.EOF:
                # A reset reads as EOF too, and gRPC cancels this task only a moment later:
                # wait for that so a reset is counted as cancelled, an empty call as invalid.
                await asyncio.sleep(RESET_NOTICE_WAIT)
                empty = (
                    EMPTY_CALL
                    if signal == "traces"
                    else f"the call ended without an {PASSED_THROUGH[signal][0]} message"
                )
                return self._intake.refuse(TRANSPORT, "invalid", empty)
            # The handler has no deserializer: gRPC gives the message as its bytes (the stubs
            # type read() as the request type without EOF, so _read_within returns object).
            return cast(bytes, request)
        except asyncio.TimeoutError:  # TimeoutError from 3.11 on
            return self._intake.refuse(TRANSPORT, "receive_timeout", self._timeout_message)
        except asyncio.CancelledError:
            if task not in self._evicted:
                # The sender reset the call (or the receiver is stopping) before its message arrived.
                self._intake.refuse(TRANSPORT, "cancelled", "")
                raise
            self._evicted.discard(task)
            if hasattr(task, "uncancel"):  # Python 3.11+: this cancel is handled here
                task.uncancel()
            return self._intake.refuse(TRANSPORT, "evicted", self._evicted_message)
        finally:
            self._waiting.pop(task, None)

    async def _abort(self, outcome: Outcome, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        if outcome.kind.retryable:
            retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=self._retry_after))
            detail = any_pb2.Any()
            detail.Pack(retry)
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=outcome.message, details=[detail])
            # The OpenTelemetry exporters read this key; gRPC's rich status carries it too.
            extra: tuple[tuple[str, Any], ...] = (("google.rpc.retryinfo-bin", retry.SerializeToString()),)
        else:
            # RESOURCE_EXHAUSTED without RetryInfo: OTLP exporters do not retry a request too large.
            code = RPC_CODES.get(outcome.kind, code_pb2.INVALID_ARGUMENT)
            status = status_pb2.Status(code=code, message=outcome.message)
            extra = ()
        rich = rpc_status.to_status(status)
        await context.abort(rich.code, rich.details, tuple(rich.trailing_metadata) + extra)

    def start(self) -> None:
        self._call(self._server.start())

    def shutdown(self, deadline: float) -> bool:
        """stop() with calls in flight given GRACE seconds, or what is left before `deadline`."""
        self.stop(grace=max(0.0, min(GRACE, deadline - time.monotonic())))
        return True

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let calls in flight finish (they end in the queue), then stop."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._server.stop(grace), timeout=grace + 5)
        except futures.TimeoutError:
            log.warning("the gRPC receiver did not stop within %.1fs", grace + 5)
        self._close_loop()

    def _close_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
