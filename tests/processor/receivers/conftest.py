"""Receivers wired to a real queue and scanner, with the worker not running (a stalled pipeline),
so a test controls exactly when the queue is full."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from apiusage.processor.config import GrpcProtocol, HttpProtocol, UsageConfig
from apiusage.processor.derive.requests import span_field_sources
from apiusage.processor.pipeline import SpanQueue
from apiusage.processor.receivers.fields import FieldScanner
from apiusage.processor.receivers.grpc import GrpcReceiver
from apiusage.processor.receivers.http import HttpReceiver
from apiusage.processor.receivers.intake import Intake
from apiusage.processor.telemetry import PipelineStats


@dataclass
class Stalled:
    queue: SpanQueue
    stats: PipelineStats
    http_url: str
    grpc_target: str


@pytest.fixture
def stalled() -> Iterator[Stalled]:
    stats = PipelineStats()
    queue = SpanQueue(max_spans=10)
    intake = Intake(FieldScanner(span_field_sources(UsageConfig()), [("service.name",)]), queue, stats)
    http = HttpReceiver(
        HttpProtocol(endpoint="127.0.0.1:0", max_request_body_size=64 * 1024), intake, retry_after=7
    )
    grpc_receiver = GrpcReceiver(
        GrpcProtocol(endpoint="127.0.0.1:0", max_recv_msg_size_mib=1), intake, retry_after=7
    )
    http.start()
    grpc_receiver.start()
    try:
        yield Stalled(
            queue, stats, f"http://127.0.0.1:{http.port}/v1/traces", f"127.0.0.1:{grpc_receiver.port}"
        )
    finally:
        http.stop()
        grpc_receiver.stop(0)
