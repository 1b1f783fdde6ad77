"""Hostile framing on the HTTP ports: every bad request gets a clear answer, is counted, and
never reaches past the limits (issue 12 items 1, 4, 5, 6, 7)."""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Iterator

import pytest
from google.rpc import status_pb2

from tests.support.otlp import request_with_spans
from tests.support.processor import RunningProcessor, running_processor, sample
from tests.support.rawhttp import Conn, exchange, post_head

TOKEN = "s3cret-token-for-tests"
PB = "application/x-protobuf"


@pytest.fixture(scope="module")
def running() -> Iterator[RunningProcessor]:
    config = {"receivers": {"otlp": {"protocols": {"http": {"max_request_body_size": "1MiB"}}}}}
    with running_processor(config) as running:
        yield running


def ports(running: RunningProcessor) -> tuple[int, int]:
    return running.processor.http.port, running.processor.metrics.port


def count(running: RunningProcessor, outcome: str) -> float:
    return sample(running.scrape(), "apiusage_export_requests_total", transport="http", outcome=outcome) or 0


def received(running: RunningProcessor) -> float:
    return sample(running.scrape(), "apiusage_spans_received_total", transport="http") or 0


# --------------------------------------------------------------------------- item 1: chunked


@pytest.mark.parametrize("size", [b"-1", b"-5", b"0x1a", b"1_a"])
def test_chunk_size_that_is_not_plain_hex_is_400_and_counted(running, size) -> None:
    otlp, _ = ports(running)
    before = count(running, "malformed")
    head = post_head("/v1/traces", {"Content-Type": PB, "Transfer-Encoding": "chunked"})
    with Conn(otlp) as conn:
        # Old code: `-1` read to the end of the stream (no answer while the sender keeps it open).
        conn.send(head + size + b"\r\n" + b"\x00" * 64)
        response = conn.read_response(timeout=5)
        assert response is not None
        assert response.status == 400
        assert response.headers["connection"] == "close"
        assert response.body.startswith(b"malformed HTTP request: ")
        assert conn.closed_by_server(timeout=5)
    assert count(running, "malformed") == before + 1


def test_transfer_encoding_xchunked_is_not_chunked(running) -> None:
    otlp, _ = ports(running)
    before = count(running, "malformed")
    head = post_head("/v1/traces", {"Content-Type": PB, "Transfer-Encoding": "xchunked"})
    response = exchange(otlp, head + b"5\r\nhello\r\n0\r\n\r\n")
    assert response is not None and response.status == 400
    assert count(running, "malformed") == before + 1


def test_chunked_body_over_the_limit_is_413_after_the_limit_not_the_end(running) -> None:
    otlp, _ = ports(running)
    before = count(running, "too_large")
    head = post_head("/v1/traces", {"Content-Type": PB, "Transfer-Encoding": "chunked"})
    chunk = b"%x\r\n" % (256 * 1024) + b"\x00" * (256 * 1024) + b"\r\n"
    with Conn(otlp) as conn:
        conn.send(head)
        for _ in range(5):  # 1.25 MiB: over the 1 MiB limit; the stream never ends
            conn.send(chunk)
        response = conn.read_response(timeout=5)
    assert response is not None and response.status == 413
    assert status_pb2.Status.FromString(response.body).message == (
        "body is larger than the limit of 1048576 bytes"
    )
    assert count(running, "too_large") == before + 1


# --------------------------------------------------------------------------- item 4: no answer


@pytest.mark.parametrize("length", ["\u0661\u0662", "1" * 4301, "0" * 4300 + "x"])
def test_content_length_not_plain_digits_is_400_and_counted(running, length) -> None:
    otlp, _ = ports(running)
    before = count(running, "malformed")
    response = exchange(otlp, post_head("/v1/traces", {"Content-Type": PB, "Content-Length": length}))
    assert response is not None and response.status == 400
    assert response.body.startswith(b"malformed HTTP request: ")
    assert count(running, "malformed") == before + 1


def test_json_integer_of_more_than_4300_digits_is_400_naming_it(running) -> None:
    otlp, _ = ports(running)
    before = count(running, "invalid")
    doc = b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": ' + b"9" * 5000 + b"}]}]}]}"
    head = post_head("/v1/traces", {"Content-Type": "application/json", "Content-Length": str(len(doc))})
    response = exchange(otlp, head + doc)
    assert response is not None and response.status == 400
    assert json.loads(response.body) == {
        "code": 3,
        "message": "JSON body has an integer of more than 4300 digits",
    }
    assert count(running, "invalid") == before + 1


def test_runbook_name_longer_than_a_file_name_is_404(running) -> None:
    _, metrics = ports(running)
    response = exchange(metrics, b"GET /runbooks/" + b"A" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response is not None
    assert (response.status, response.body) == (404, b"no such runbook: see /runbooks/ for the list\n")


def test_unparsable_accept_version_gets_the_text_format(running) -> None:
    _, metrics = ports(running)
    response = exchange(
        metrics,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=abc\r\n\r\n",
    )
    assert response is not None and response.status == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"\napiusage_export_requests_total{" in response.body


def test_handler_exception_is_a_one_line_500_and_one_log_line(caplog) -> None:
    from apiusage.processor._httpserver import HttpServer

    async def broken(request: object) -> object:
        raise KeyError("boom")

    server = HttpServer("127.0.0.1:0", broken, "test.endpoint", "test")
    server.start()
    try:
        with caplog.at_level(logging.ERROR, logger="apiusage.processor.http"):
            response = exchange(server.port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        server.stop()
    assert response is not None
    assert (response.status, response.body) == (500, b"internal error; see the processor's log\n")
    assert [r.getMessage() for r in caplog.records] == ["test: GET /x failed: KeyError: 'boom'"]


# --------------------------------------------------------------------------- item 5: 401 first


def test_unauthenticated_post_is_401_before_its_body_is_sent() -> None:
    config = {"receivers": {"otlp": {"auth": {"tokens": [{"token": TOKEN}]}}}}
    with running_processor(config) as running:
        otlp = running.processor.http.port
        head = post_head("/v1/traces", {"Content-Type": PB, "Content-Length": str(60 * 1024 * 1024)})
        with Conn(otlp) as conn:
            conn.send(head + b"\x00" * (256 * 1024))
            # Old code read all 60 MiB before answering: with a quarter MiB sent there is no answer.
            response = conn.read_response(timeout=5)
            assert response is not None
            assert response.status == 401
            assert response.headers["www-authenticate"] == 'Bearer realm="otlp"'
            assert response.headers["connection"] == "close"
            assert conn.closed_by_server(timeout=5)
        assert count(running, "unauthenticated") == 1


# --------------------------------------------------------------------------- item 6: one write


def test_keep_alive_answers_with_a_body_are_not_delayed(running) -> None:
    otlp, metrics = ports(running)
    doc = json.dumps({"resourceSpans": []}).encode()
    export = (
        post_head("/v1/traces", {"Content-Type": "application/json", "Content-Length": str(len(doc))}) + doc
    )
    for port, request, body in (
        (otlp, export, b"{}"),
        (metrics, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"ok\n"),
    ):
        with Conn(port) as conn:
            start = time.monotonic()
            for _ in range(50):
                conn.send(request)
                response = conn.read_response(timeout=5)
                assert response is not None and (response.status, response.body) == (200, body)
            elapsed = time.monotonic() - start
        # Old code: ~40 ms each (headers and body in two writes, Nagle + delayed ACK): 2 s.
        assert elapsed < 1.0, f"50 answers on one connection took {elapsed:.2f} s"


# --------------------------------------------------------------------------- item 7: smaller ones


def test_get_body_is_not_parsed_as_the_next_request(running) -> None:
    _, metrics = ports(running)
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    with Conn(metrics) as conn:
        conn.send(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled
        )
        first = conn.read_response(timeout=5)
        assert first is not None and (first.status, first.body) == (200, b"ok\n")
        assert conn.read_response(timeout=2) is None  # no answer to the body: the server closed


def test_every_member_of_a_multi_member_gzip_body_is_inflated(running) -> None:
    otlp, _ = ports(running)
    before = received(running)
    # Two protobuf messages back to back are one message with both resource_spans lists.
    body = gzip.compress(request_with_spans(3).SerializeToString()) + gzip.compress(
        request_with_spans(2).SerializeToString()
    )
    head = post_head(
        "/v1/traces", {"Content-Type": PB, "Content-Encoding": "gzip", "Content-Length": str(len(body))}
    )
    response = exchange(otlp, head + body)
    assert response is not None and (response.status, response.body) == (200, b"")
    assert received(running) == before + 5


def test_multi_member_gzip_is_bounded_by_the_sum(running) -> None:
    otlp, _ = ports(running)
    member = gzip.compress(b"\x00" * (600 * 1024))  # each under 1 MiB, the two together over it
    body = member + member
    head = post_head(
        "/v1/traces", {"Content-Type": PB, "Content-Encoding": "gzip", "Content-Length": str(len(body))}
    )
    response = exchange(otlp, head + body)
    assert response is not None and response.status == 413
    assert status_pb2.Status.FromString(response.body).message == (
        "decompressed body is larger than the limit of 1048576 bytes"
    )


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip;q=0", False),
        ("gzip; q=0.0, identity", False),
        ("*;q=0", False),
        ("gzip", True),
        ("identity;q=0.5, gzip;q=0.8", True),
        ("*", True),
        ("br", False),
    ],
)
def test_accept_encoding_q_values_are_honoured(running, accept, gzipped) -> None:
    _, metrics = ports(running)
    response = exchange(
        metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: " + accept.encode() + b"\r\n\r\n"
    )
    assert response is not None and response.status == 200
    assert response.headers.get("content-encoding") == ("gzip" if gzipped else None)
    text = gzip.decompress(response.body) if gzipped else response.body
    assert b"\napiusage_export_requests_total{" in text
