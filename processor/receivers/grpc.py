"""OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

The method is registered without a request deserializer, so the handler gets
the raw protobuf bytes and the scanner reads them directly: protobuf never
builds a Python object per span.  grpc-encoding gzip and the message size
limit (checked after decompression) are handled by gRPC itself.
"""

from __future__ import annotations

from concurrent import futures

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .._httpserver import BindError
from ..config import GrpcProtocol, split_endpoint
from .auth import Authenticator
from .intake import Intake, Outcome

__all__ = ["GrpcReceiver", "SERVICE", "METHOD"]

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = "Export"
TRANSPORT = "grpc"
MiB = 1 << 20


def _credentials(config: GrpcProtocol) -> grpc.ServerCredentials:
    tls = config.tls
    with open(tls.cert_file, "rb") as cert, open(tls.key_file, "rb") as key:
        pair = (key.read(), cert.read())
    ca = None
    if tls.client_ca_file:
        with open(tls.client_ca_file, "rb") as f:
            ca = f.read()
    return grpc.ssl_server_credentials([pair], root_certificates=ca,
                                       require_client_auth=ca is not None)


class GrpcReceiver:
    def __init__(self, config: GrpcProtocol, intake: Intake, retry_after: float,
                 auth: Authenticator | None = None, max_workers: int = 8) -> None:
        self._intake = intake
        self._auth = auth
        self._retry_after = max(1, int(retry_after))
        limit = config.max_recv_msg_size_mib * MiB
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="otlp-grpc"),
            options=[("grpc.max_receive_message_length", limit),
                     ("grpc.so_reuseport", 0)],
            # Calls past this get RESOURCE_EXHAUSTED at once instead of queueing in memory.
            maximum_concurrent_rpcs=config.max_concurrent_streams,
        )
        handler = grpc.method_handlers_generic_handler(SERVICE, {
            METHOD: grpc.unary_unary_rpc_method_handler(self._export),
        })
        self._server.add_generic_rpc_handlers((handler,))
        host, port = split_endpoint(config.endpoint)
        if not host:
            address = f"[::]:{port}"  # ":4317", as in the Collector: every interface
        else:
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if config.tls is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, _credentials(config))
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise BindError(0, f"cannot listen on {config.endpoint} "
                               "(receivers.otlp.protocols.grpc.endpoint): the port is in use or "
                               "the address is not local; set it to a free host:port")

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        service = "*"
        if self._auth is not None:
            metadata = dict(context.invocation_metadata())
            found = self._auth.service_for(metadata.get("authorization"))
            if found is None:
                self._intake.refuse(TRANSPORT, "unauthenticated", "")
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
            service = found
        outcome = self._intake.overloaded(TRANSPORT) or self._intake.accept(request, TRANSPORT,
                                                                             service)
        if outcome.kind == "success":
            return b""
        if outcome.kind == "partial":
            response = ExportTraceServiceResponse()
            response.partial_success.rejected_spans = outcome.rejected
            response.partial_success.error_message = outcome.message
            return response.SerializeToString()
        self._abort(outcome, context)
        return b""  # not reached: abort raises

    def _abort(self, outcome: Outcome, context: grpc.ServicerContext) -> None:
        if outcome.kind in ("queue_full", "shutting_down", "memory_limit", "state_backlog"):
            retry = error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=self._retry_after))
            detail = any_pb2.Any()
            detail.Pack(retry)
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message=outcome.message,
                                       details=[detail])
            # The OpenTelemetry exporters read this key; gRPC's rich status carries it too.
            extra = (("google.rpc.retryinfo-bin", retry.SerializeToString()),)
        else:
            status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=outcome.message)
            extra = ()
        rich = rpc_status.to_status(status)
        context.set_trailing_metadata(tuple(rich.trailing_metadata) + extra)
        context.abort(rich.code, rich.details)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float = 5.0) -> None:
        """Refuse new calls, let calls in flight finish (they end in the queue), then stop."""
        self._server.stop(grace).wait(grace + 1)
