"""Feedback in logs requests takes the queue's room on both transports: a full queue refuses the
request retryably (and it is not forwarded); a logs request without feedback is answered as before."""

from __future__ import annotations

import grpc
import pytest
from apiusage.processor.config import OtlpForwarder, UsageConfig
from apiusage.processor.derive.feedback import Feedback
from apiusage.processor.derive.requests import span_field_sources
from apiusage.processor.exporters.otlp_forward import Forwarder
from apiusage.processor.pipeline import FeedbackBatch, SpanQueue
from apiusage.processor.receivers.fields import FieldScanner
from apiusage.processor.receivers.intake import Intake
from apiusage.processor.telemetry import ExportOutcome, PipelineStats
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from tests.processor.receivers.test_http import post
from tests.support.feedback import ORDERS, T, fb, feedback_attrs, logs_request
from tests.support.otlp import request_with_spans

LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def feedback_body(n: int = 2) -> bytes:
    return logs_request((ORDERS, [fb() for _ in range(n)] + [{"body": "plain"}])).SerializeToString()


def plain_body() -> bytes:
    return logs_request((ORDERS, [{"body": "order placed"}] * 3)).SerializeToString()


def logs_url(stalled) -> str:
    return stalled.http_url.replace("/v1/traces", "/v1/logs")


def test_feedback_is_queued_in_the_room_of_spans(stalled) -> None:
    status, body, _ = post(logs_url(stalled), feedback_body(2))
    assert (status, body) == (200, b"")
    assert stalled.queue.depth == 2
    resources, batch, _ = stalled.queue.take(0)
    assert resources is None
    assert batch == FeedbackBatch([Feedback("orders-api", "", "docs", "4", None, T)] * 2, 0)
    assert stalled.stats.export_requests["http", "logs_not_forwarded"] == 1


def test_refused_scores_reach_the_worker_even_with_the_queue_full(stalled) -> None:
    post(stalled.http_url, request_with_spans(10).SerializeToString())
    body = logs_request((ORDERS, [fb(attributes=feedback_attrs(0))])).SerializeToString()
    assert post(logs_url(stalled), body)[0] == 200  # nothing to count but the refusal: no room taken
    assert stalled.queue.depth == 10
    stalled.queue.take(0)
    assert stalled.queue.take(0)[1] == FeedbackBatch([], 1)


def test_a_full_queue_refuses_feedback_over_http_retryably(stalled) -> None:
    post(stalled.http_url, request_with_spans(10).SerializeToString())
    status, body, headers = post(logs_url(stalled), feedback_body(1))
    assert (status, headers["Retry-After"]) == (503, "7")
    refusal = status_pb2.Status.FromString(body)
    assert (refusal.code, refusal.message) == (14, "the processing queue is full; retry later")
    assert stalled.stats.export_requests["http", "queue_full"] == 1
    assert stalled.queue.depth == 10
    # Logs without feedback take no room: answered as before.
    assert post(logs_url(stalled), plain_body())[:2] == (200, b"")
    assert stalled.stats.export_requests["http", "logs_not_forwarded"] == 1


def test_a_full_queue_refuses_feedback_over_grpc_with_a_retry_delay(stalled) -> None:
    post(stalled.http_url, request_with_spans(10).SerializeToString())
    with grpc.insecure_channel(stalled.grpc_target) as channel:
        export = channel.unary_unary(
            LOGS_METHOD,
            request_serializer=ExportLogsServiceRequest.SerializeToString,
            response_deserializer=ExportLogsServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            export(ExportLogsServiceRequest.FromString(feedback_body(1)), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == "the processing queue is full; retry later"
        trailers = dict(info.value.trailing_metadata())
        retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
        assert retry.retry_delay.seconds == 7
        assert (
            export(ExportLogsServiceRequest.FromString(plain_body()), timeout=5)
            == ExportLogsServiceResponse()
        )
    assert stalled.stats.export_requests["grpc", "queue_full"] == 1
    assert stalled.stats.export_requests["grpc", "logs_not_forwarded"] == 1
    assert stalled.queue.depth == 10


def test_a_body_refused_by_the_forwarder_leaves_no_feedback_queued() -> None:
    """The forward queue (one request, never sent: its thread is not started) drops the second
    body; the client retries it, so its feedback must not have been counted already."""
    stats = PipelineStats()
    queue = SpanQueue(max_spans=100)
    forwarder = Forwarder(OtlpForwarder(endpoint="http://127.0.0.1:9", max_queue_requests=1))
    intake = Intake(
        FieldScanner(span_field_sources(UsageConfig()), [("service.name",)]), queue, stats, forwarder.forward
    )
    assert intake.pass_through("logs", feedback_body(2), "http").kind is ExportOutcome.SUCCESS
    assert queue.depth == 2
    refused = intake.pass_through("logs", feedback_body(3), "http")
    assert (refused.kind, refused.message) == (
        ExportOutcome.QUEUE_FULL,
        "the queue of requests to forward (exporters.otlp) is full; retry later",
    )
    assert queue.depth == 2
    assert len(queue._items) == 1
    assert stats.export_requests == {("http", "logs_forwarded"): 1, ("http", "queue_full"): 1}
    assert forwarder.outcomes["logs"]["dropped"] == 1


def test_a_closed_queue_refuses_feedback_as_shutting_down(stalled) -> None:
    stalled.queue.close()
    status, body, _ = post(logs_url(stalled), feedback_body(1))
    assert status == 503
    assert status_pb2.Status.FromString(body).message == "the processor is shutting down"
    assert stalled.stats.export_requests["http", "shutting_down"] == 1


def test_feedback_is_refused_retryably_while_the_state_backlog_is_full() -> None:
    stats = PipelineStats()
    queue = SpanQueue(max_spans=100)
    full = [True]
    scanner = FieldScanner(span_field_sources(UsageConfig()), [("service.name",)])
    intake = Intake(scanner, queue, stats, backlog=lambda: full[0])
    refused = intake.pass_through("logs", feedback_body(1), "grpc")
    assert refused.kind is ExportOutcome.STATE_BACKLOG and refused.kind.retryable
    assert refused.message.startswith("the state store is behind")
    # Logs without feedback never reach the store: answered as before.
    assert intake.pass_through("logs", plain_body(), "grpc").kind is ExportOutcome.SUCCESS
    full[0] = False
    assert intake.pass_through("logs", feedback_body(1), "grpc").kind is ExportOutcome.SUCCESS
    assert queue.depth == 1
    assert stats.export_requests == {("grpc", "state_backlog"): 1, ("grpc", "logs_not_forwarded"): 2}
