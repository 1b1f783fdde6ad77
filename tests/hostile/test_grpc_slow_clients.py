"""Hostile OTLP/gRPC senders (raw HTTP/2) that open Export calls and stall must not starve others.

Each test runs a real processor and real sockets on 127.0.0.1: stalling calls come from
`tests/support/h2client.py`, the legitimate sender is a grpcio channel.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from apiusage.processor.config import ConfigError, parse_config
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.h2client import StallingClient
from tests.support.otlp import request_with_spans
from tests.support.processor import RunningProcessor, matching, running_processor, wait_for

pytestmark = pytest.mark.slow

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RECEIVE_TIMEOUT = 4.0  # long enough for the legitimate exports to finish well inside it
ENHANCE_YOUR_CALM = 11  # HTTP/2 error code of a stream past SETTINGS_MAX_CONCURRENT_STREAMS


@pytest.fixture
def running() -> Iterator[RunningProcessor]:
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"receive_timeout": f"{RECEIVE_TIMEOUT}s"}}}}}
    with running_processor(config) as running:
        yield running


def host_port(running: RunningProcessor) -> tuple[str, int]:
    host, port = running.grpc_endpoint.rsplit(":", 1)
    return host, int(port)


def export_once(target: str, spans: int = 1, timeout: float = 5) -> ExportTraceServiceResponse:
    """One export from a fresh grpcio channel, as an SDK exporter would send it."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        return call(request_with_spans(spans), timeout=timeout)


def grpc_requests(running: RunningProcessor) -> dict[str, float]:
    """apiusage_export_requests_total{transport="grpc"} by outcome."""
    found = matching(running.scrape(), "apiusage_export_requests_total", transport="grpc")
    return {dict(labels)["outcome"]: value for labels, value in found.items()}


def threads() -> list[str]:
    """This process's threads, less the metrics server's per-scrape ones (they end on their own)."""
    return sorted(t.name for t in threading.enumerate() if "process_request_thread" not in t.name)


def test_calls_that_stall_mid_message_do_not_starve_other_senders(running: RunningProcessor) -> None:
    assert grpc_requests(running) == {}  # also starts whatever threads a scrape needs
    threads_before = threads()
    stalled = []
    try:
        opened = time.monotonic()
        for _ in range(16):  # twice the old receiver's 8 worker threads
            client = StallingClient(*host_port(running))
            stalled.append((client, client.open_call(declared_length=1000, sent=10)))
        for client, _ in stalled:
            client.pump(0.1)
        started = time.monotonic()
        assert export_once(running.grpc_endpoint) == ExportTraceServiceResponse()
        assert time.monotonic() - started < RECEIVE_TIMEOUT - 1
        assert grpc_requests(running) == {"success": 1}
        # A stalled call holds a coroutine on the receiver's one loop, not a thread.
        assert threads() == threads_before

        for client, stream in stalled:
            client.wait_answered([stream], timeout=RECEIVE_TIMEOUT + 6 - (time.monotonic() - opened))
        waited = time.monotonic() - opened
        for client, stream in stalled:
            answer = client.answers[stream]
            assert answer.grpc_status == "4", answer  # DEADLINE_EXCEEDED
            assert answer.headers["grpc-message"] == (
                "the export message was not received within 4s "
                "(receivers.otlp.protocols.grpc.receive_timeout)"
            )
        assert RECEIVE_TIMEOUT - 0.5 < waited < RECEIVE_TIMEOUT + 6
        assert grpc_requests(running) == {"success": 1, "receive_timeout": 16}
        assert threads() == threads_before
    finally:
        for client, _ in stalled:
            client.close()
    running.wait_processed(1)


def test_one_connection_of_header_only_calls_does_not_lock_out_others(running: RunningProcessor) -> None:
    hostile = StallingClient(*host_port(running))
    try:
        # All sent before the server's SETTINGS arrive, so the client does not hold itself back.
        streams = [hostile.open_call() for _ in range(80)]
        hostile.pump(0.5)
        started = time.monotonic()
        for _ in range(3):
            assert export_once(running.grpc_endpoint, spans=2) == ExportTraceServiceResponse()
        assert time.monotonic() - started < RECEIVE_TIMEOUT - 1
        assert grpc_requests(running) == {"success": 3}

        held, beyond = streams[:64], streams[64:]
        # max_concurrent_streams (64) is the per-connection bound: the 16 beyond it are refused at once.
        assert [hostile.answers[s].reset for s in beyond] == [ENHANCE_YOUR_CALM] * 16
        assert [hostile.answers[s].reset for s in held] == [None] * 64
        assert not any(hostile.answers[s].headers for s in held)

        hostile.wait_answered(held, timeout=RECEIVE_TIMEOUT + 6)
        assert [hostile.answers[s].grpc_status for s in held] == ["4"] * 64
        assert grpc_requests(running) == {"success": 3, "receive_timeout": 64}
    finally:
        hostile.close()
    running.wait_processed(6)


def test_reset_and_empty_calls_are_counted(running: RunningProcessor) -> None:
    client = StallingClient(*host_port(running))
    try:
        reset = client.open_call(declared_length=1000, sent=10)
        client.pump(0.3)
        client.reset(reset)
        client.pump(0.3)
        wait_for(
            running, "apiusage_export_requests_total", 1, timeout=5, transport="grpc", outcome="cancelled"
        )

        empty = client.open_call()
        client.end(empty)  # half-closed without a message
        client.wait_answered([empty], timeout=5)
        answer = client.answers[empty]
        assert answer.grpc_status == "3", answer  # INVALID_ARGUMENT
        assert answer.headers["grpc-message"] == "the call ended without an ExportTraceServiceRequest message"
        assert grpc_requests(running) == {"cancelled": 1, "invalid": 1}
    finally:
        client.close()


def test_stop_ends_stalled_calls_and_counts_them() -> None:
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"receive_timeout": "60s"}}}}}
    with running_processor(config) as running:
        client = StallingClient(*host_port(running))
        try:
            stream = client.open_call(declared_length=1000, sent=10)
            client.pump(0.3)
            started = time.monotonic()
            running.processor.grpc.stop(grace=1.0)
            assert time.monotonic() - started < 5
            client.wait_answered([stream], timeout=3)
            assert client.closed  # the call is cut with its connection, never answered OK
            assert client.answers[stream].grpc_status is None
            assert grpc_requests(running) == {"cancelled": 1}
        finally:
            client.close()


def test_past_max_pending_calls_the_longest_waiting_call_is_ended() -> None:
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {"receive_timeout": "60s", "max_pending_calls": 8}}}}
    }
    with running_processor(config) as running:
        hostile = StallingClient(*host_port(running))
        try:
            streams = []
            for _ in range(12):  # one at a time, so "oldest" is well defined
                streams.append(hostile.open_call(declared_length=1000, sent=10))
                hostile.pump(0.1)
            hostile.wait_answered(streams[:4], timeout=5)
            for stream in streams[:4]:
                answer = hostile.answers[stream]
                assert answer.grpc_status == "14", answer  # UNAVAILABLE, with a retry delay
                assert answer.headers["grpc-message"] == (
                    "more than 8 calls were waiting for their message "
                    "(receivers.otlp.protocols.grpc.max_pending_calls) and this one had waited "
                    "longest; retry later"
                )
                assert "google.rpc.retryinfo-bin" in answer.headers
            assert not any(hostile.answers[s].headers for s in streams[4:])
            # A sender whose message comes with its headers waits only a moment, so it is never the
            # oldest: its arrival ends the oldest stalled call instead.
            assert export_once(running.grpc_endpoint) == ExportTraceServiceResponse()
            hostile.wait_answered(streams[4:5], timeout=5)
            assert hostile.answers[streams[4]].grpc_status == "14"
            assert not any(hostile.answers[s].headers for s in streams[5:])
            assert grpc_requests(running) == {"evicted": 5, "success": 1}
        finally:
            hostile.close()
        running.wait_processed(1)


def test_oversized_messages_are_counted() -> None:
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"max_recv_msg_size_mib": 1}}}}}
    with running_processor(config) as running:
        big = request_with_spans(1)
        big.resource_spans[0].scope_spans[0].spans[0].name = "x" * (2 << 20)
        with grpc.insecure_channel(running.grpc_endpoint) as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(METHOD)(big.SerializeToString(), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        wait_for(
            running, "apiusage_export_requests_total", 1, timeout=5, transport="grpc", outcome="cancelled"
        )


def test_a_connection_that_never_speaks_http2_is_closed(running: RunningProcessor) -> None:
    with socket.create_connection(host_port(running), timeout=5) as silent:
        started = time.monotonic()
        received = b""
        while time.monotonic() - started < 16:  # the handshake deadline is 10 s
            try:
                chunk = silent.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            received += chunk
        closed_after = time.monotonic() - started
    assert 9 < closed_after < 15, closed_after
    assert frame_types(received)[0] == 4  # the server's SETTINGS
    assert frame_types(received)[-1] == 7  # GOAWAY, then the close


def frame_types(data: bytes) -> list[int]:
    """The HTTP/2 frame types in `data` (9-byte headers: 24-bit length, type, flags, stream)."""
    types = []
    while len(data) >= 9:
        types.append(data[3])
        data = data[9 + int.from_bytes(data[:3], "big") :]
    return types


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0s", "must be at least 1ms"),
        ("2h", "must be at most 3600s (got 7200s)"),
        (float("nan"), "must be a finite duration (got float nan)"),
    ],
)
def test_receive_timeout_out_of_range_names_the_key(value: str | float, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"receivers": {"otlp": {"protocols": {"grpc": {"receive_timeout": value}}}}})
    problems = str(info.value).splitlines()[1:]
    assert problems == [f"  receivers.otlp.protocols.grpc.receive_timeout: {message}"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "must be at least 1"),
        (1_000_001, "must be at most 1000000 (got 1000001)"),
    ],
)
def test_max_pending_calls_out_of_range_names_the_key(value: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"receivers": {"otlp": {"protocols": {"grpc": {"max_pending_calls": value}}}}})
    problems = str(info.value).splitlines()[1:]
    assert problems == [f"  receivers.otlp.protocols.grpc.max_pending_calls: {message}"]
