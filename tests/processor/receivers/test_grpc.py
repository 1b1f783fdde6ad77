"""OTLP/gRPC answers, per the OTLP specification, over a real gRPC channel."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.otlp import request_with_spans

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def export(stalled):
    channel = grpc.insecure_channel(
        stalled.grpc_target, options=[("grpc.max_send_message_length", 256 << 20)]
    )
    call = channel.unary_unary(
        METHOD,
        request_serializer=ExportTraceServiceRequest.SerializeToString,
        response_deserializer=ExportTraceServiceResponse.FromString,
    )
    yield call
    channel.close()


def test_success_and_partial_success(stalled, export) -> None:
    assert export(request_with_spans(2), timeout=5) == ExportTraceServiceResponse()
    response = export(request_with_spans(3, bad_ids=1), timeout=5)
    assert response.partial_success.rejected_spans == 1
    assert response.partial_success.error_message.startswith("1 of 3 spans rejected")
    assert stalled.queue.depth == 4
    assert stalled.stats.spans_received["grpc"] == 5


def test_gzip_compressed_request(stalled, export) -> None:
    export(request_with_spans(2), timeout=5, compression=grpc.Compression.Gzip)
    assert stalled.queue.depth == 2


def test_undecodable_payload_is_invalid_argument(stalled) -> None:
    channel = grpc.insecure_channel(stalled.grpc_target)
    raw = channel.unary_unary(METHOD)  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\x0a\xff\xff\xff\x0f garbage", timeout=5)
    channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("cannot decode ExportTraceServiceRequest: ")
    details = dict(info.value.trailing_metadata())["grpc-status-details-bin"]
    assert status_pb2.Status.FromString(details).code == 3


def test_full_queue_is_unavailable_with_retry_info(stalled, export) -> None:
    export(request_with_spans(9), timeout=5)
    with pytest.raises(grpc.RpcError) as info:
        export(request_with_spans(2), timeout=5)
    err = info.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert err.details() == "the processing queue is full; retry later"
    metadata = dict(err.trailing_metadata())
    retry = error_details_pb2.RetryInfo.FromString(metadata["google.rpc.retryinfo-bin"])
    assert retry.retry_delay.seconds == 7
    rich = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    assert rich.code == 14
    assert rich.details[0].Unpack(retry) and retry.retry_delay.seconds == 7
    assert stalled.stats.spans_rejected["queue_full"] == 2


def test_oversized_message_is_resource_exhausted(stalled, export) -> None:
    big = request_with_spans(1)
    big.resource_spans[0].scope_spans[0].spans[0].name = "x" * (1 << 20)
    with pytest.raises(grpc.RpcError) as info:
        export(big, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stalled.queue.depth == 0


def test_gzip_bomb_is_resource_exhausted(stalled, export) -> None:
    bomb = request_with_spans(1)
    bomb.resource_spans[0].scope_spans[0].spans[0].name = "\x00" * (40 << 20)
    with pytest.raises(grpc.RpcError) as info:
        export(bomb, timeout=10, compression=grpc.Compression.Gzip)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stalled.queue.depth == 0
