"""Attacks on the network surfaces (OTLP/HTTP, metrics, admin, OTLP/gRPC) after issue 12's hardening."""

from __future__ import annotations

import gzip
import json
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from apiusage.processor._httpserver import server_tls_context
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.attack_net import get_small, http_server, non_reader, open_connections
from tests.support.h2client import StallingClient
from tests.support.otlp import request_with_spans
from tests.support.polling import wait_until
from tests.support.processor import RunningProcessor, running_processor, sample
from tests.support.rawhttp import Conn, post_head
from tests.support.tls import make_certs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def processor() -> Iterator[RunningProcessor]:
    with running_processor() as running:
        yield running


def _http_port(running: RunningProcessor) -> int:
    return urllib.parse.urlsplit(running.http_endpoint).port or 0


def _post_json(running: RunningProcessor, body: bytes):  # noqa: ANN202
    conn = Conn(_http_port(running))
    try:
        conn.send(
            post_head("/v1/traces", {"Content-Type": "application/json", "Content-Length": str(len(body))})
            + body
        )
        return conn.read_response()
    finally:
        conn.sock.close()


PB = "application/x-protobuf"
GET_BIG = b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n"


def test_a_client_that_never_reads_its_answer_is_dropped_after_send_timeout() -> None:
    # Before: the 8 MiB answer sat in the server's buffer for ever, its connection closed by the
    # keep-alive timer but never gone (transport.close waits for the client to read).
    with http_server(max_connections=4, idle_timeout=1, send_timeout=1.5) as server:
        sock = non_reader(server.port, GET_BIG)
        try:
            wait_until(
                lambda: open_connections(server)[1] > 0, 5, "an answer stuck in a connection"
            )  # the answer is stuck
            started = time.monotonic()
            wait_until(
                lambda: open_connections(server) == (0, 0),
                8,
                lambda: f"no connections (open: {open_connections(server)})",
            )
            assert 1.0 < time.monotonic() - started < 8
        finally:
            sock.close()


def test_a_tls_client_that_never_reads_its_answer_is_dropped_too(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    context = server_tls_context(str(certs.server_cert), str(certs.server_key), None)
    client = ssl.create_default_context(cafile=str(certs.ca))
    with http_server(context, max_connections=4, idle_timeout=1, send_timeout=1.5) as server:
        sock = non_reader(server.port, GET_BIG, client)
        try:
            wait_until(lambda: open_connections(server)[1] > 0, 5, "an answer stuck in a connection")
            wait_until(
                lambda: open_connections(server) == (0, 0),
                8,
                lambda: f"no connections (open: {open_connections(server)})",
            )
            assert get_small(server.port, tls=client) == b"HTTP/1.1 200 OK"  # and TLS still answers
        finally:
            sock.close()


def test_unread_answers_hold_at_most_max_connections_answers() -> None:
    # Before: 10 non-readers left 10 connections (and 10 × 5.5 MB of buffered answers) past
    # max_connections 4, none ever freed: memory and file descriptors grew with each client.
    with http_server(max_connections=4, idle_timeout=1, send_timeout=30) as server:
        socks = []
        try:
            for _ in range(10):
                socks.append(non_reader(server.port, GET_BIG))
                wait_until(lambda: open_connections(server)[1] > 0, 5, "an answer stuck in a connection")
                time.sleep(0.3)  # the keep-alive timer (1 s) closes some: they must still count
                held, buffered = open_connections(server)
                assert held <= 4, held
                assert buffered <= 4 * (8 << 20)
            time.sleep(1.5)
            held, _ = open_connections(server)
            assert held <= 4
            assert get_small(server.port) == b"HTTP/1.1 200 OK"
        finally:
            for sock in socks:
                sock.close()


def test_pipelining_non_readers_cannot_lock_out_a_new_client() -> None:
    # Before: each held a slot for ever (its second answer waits for the first to drain, and no
    # deadline ran), so once max_connections did this every newcomer got 503 until they left.
    with http_server(max_connections=4, idle_timeout=1, header_timeout=1, send_timeout=30) as server:
        socks = [non_reader(server.port, GET_BIG * 2) for _ in range(4)]
        try:
            wait_until(
                lambda: open_connections(server)[0] == 4,
                5,
                lambda: f"4 connections (open: {open_connections(server)})",
            )
            time.sleep(2.5)  # past every idle and header deadline
            assert open_connections(server)[0] == 4
            for _ in range(3):
                assert get_small(server.port) == b"HTTP/1.1 200 OK"
            assert open_connections(server)[0] <= 4
        finally:
            for sock in socks:
                sock.close()


def test_connections_whose_handler_runs_are_not_evicted_and_the_bound_holds() -> None:
    # Held before too (a guard for the reordered eviction): a connection whose handler runs while
    # it trickles a pipelined request is not evicted, and the newcomer is told 503, not let in.
    with http_server(max_connections=2, header_timeout=10) as server:
        busy = []
        try:
            for _ in range(2):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHo")
                busy.append(sock)
            wait_until(
                lambda: open_connections(server)[0] == 2,
                5,
                lambda: f"2 connections (open: {open_connections(server)})",
            )
            status = get_small(server.port)
            assert status == b"HTTP/1.1 503 Service Unavailable"
            # the refused one lingers until it sees our close (at most LINGER, 2 s)
            wait_until(
                lambda: open_connections(server)[0] == 2,
                4,
                lambda: f"2 connections (open: {open_connections(server)})",
            )
        finally:
            for sock in busy:
                sock.close()


@pytest.mark.parametrize(
    "body",
    [
        b'{"\\ud800": 1}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "a", "\\udc00x": 1}]}]}]}',
    ],
    ids=["top-level-key", "span-key"],
)
def test_otlp_json_key_that_is_a_lone_surrogate_is_a_400_naming_it(
    processor: RunningProcessor, body: bytes
) -> None:
    # Before: upb raised SystemError for the key, the handler failed and the client got a 500
    # "internal error" (and the log a line per request) for what is the client's bad input.
    before = (
        sample(processor.scrape(), "apiusage_export_requests_total", transport="http", outcome="invalid") or 0
    )
    response = _post_json(processor, body)
    assert response is not None and response.status == 400
    assert json.loads(response.body) == {
        "code": 3,
        "message": "JSON body has a key that is a lone UTF-16 surrogate (such as \\ud800), "
        "which is not Unicode text",
    }
    assert (
        sample(processor.scrape(), "apiusage_export_requests_total", transport="http", outcome="invalid")
        == before + 1
    )


def _rss_mib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20


def _send_big_body(port: int, declared: int, results: list, stop_at: float) -> None:
    """POST `declared` zero bytes in 1 MiB pieces; record (status, bytes sent before the answer)."""
    chunk = bytes(1 << 20)
    conn = Conn(port, timeout=10)
    sent = 0
    try:
        conn.send(post_head("/v1/traces", {"Content-Type": PB, "Content-Length": str(declared)}))
        while sent < declared and time.monotonic() < stop_at:
            if select.select([conn.sock], [], [], 0)[0]:
                break  # answered before the whole body was sent
            conn.send(chunk)
            sent += len(chunk)
            time.sleep(0.02)
        response = conn.read_response(timeout=max(1.0, stop_at - time.monotonic()))
        results.append(
            (
                response.status if response else None,
                sent,
                response.headers.get("retry-after") if response else None,
            )
        )
    except OSError as exc:  # the server closed after answering: read what it said
        results.append((f"{type(exc).__name__}", sent, None))
    finally:
        conn.sock.close()


def test_large_bodies_admitted_together_are_refused_mid_body_when_memory_runs_short() -> None:
    # Before: the memory limiter was asked only when a request's headers arrived, so 8 bodies of
    # 16 MiB admitted together were all read in full (128 MiB past a 40 MiB headroom): with the
    # defaults, 256 connections × 64 MiB = 16 GiB could be buffered before anyone was refused.
    headroom = 40
    config = {
        "receivers": {"otlp": {"protocols": {"http": {"max_request_body_size": "16MiB"}}}},
        "processors": {
            "memory_limiter": {
                "limit_mib": _rss_mib() + headroom + 30,
                "spike_limit_mib": 30,
                "check_interval": 0.02,
            }
        },
    }
    with running_processor(config) as running:
        port = _http_port(running)
        results: list = []
        stop_at = time.monotonic() + 15
        threads = [
            threading.Thread(target=_send_big_body, args=(port, 16 << 20, results, stop_at)) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert len(results) == 8, results
        refused = [r for r in results if r[0] == 503]
        assert refused, results
        for _status, sent, retry_after in refused:
            assert sent < 16 << 20 and int(retry_after) >= 1  # told mid-body, with a retry delay
        samples = running.scrape()
        assert sample(
            samples, "apiusage_export_requests_total", transport="http", outcome="memory_limit"
        ) == len(refused)
        # The others were read in full and refused as what they are (zeros are no protobuf).
        assert all(r[0] in (400, 503) for r in results), results


def test_http2_prior_knowledge_to_the_http_port_is_told_the_port_speaks_http1(
    processor: RunningProcessor,
) -> None:
    # Before: 400 "malformed HTTP request: Pause on PRI/Upgrade", llhttp's internal words.
    conn = Conn(_http_port(processor))
    try:
        conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        response = conn.read_response()
        assert response is not None and response.status == 400
        assert response.body == (
            b"malformed HTTP request: HTTP/2 is not served on this port; send HTTP/1.1 "
            b"(OTLP over HTTP/2 is gRPC)\n"
        )
        assert conn.closed_by_server(timeout=5)
    finally:
        conn.sock.close()


ADMIN_TOKEN = "admin-token-for-the-attack-tests"


def test_unauthenticated_admin_requests_cannot_fill_the_disk_through_the_audit_log(tmp_path: Path) -> None:
    # Before: every request, token or not, was audited with its whole path and query: 60 KB of
    # query made a 60 KB line, so anyone reaching the port could fill the disk at wire speed.
    audit = tmp_path / "audit.log"
    config = {"admin": {"endpoint": "127.0.0.1:0", "token": ADMIN_TOKEN, "audit_log": str(audit)}}
    with running_processor(config) as running:
        port = running.processor.admin.port
        query = "&".join(f"k{i}={'v' * 3000}" for i in range(20))  # 60 KB
        path = "/v1/consumers/" + "p" * 3000
        for token in ("wrong-token-of-sixteen", ADMIN_TOKEN):
            conn = Conn(port)
            try:
                conn.send(
                    f"GET {path}?{query} HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {token}\r\n\r\n".encode()
                )
                response = conn.read_response()
            finally:
                conn.sock.close()
            assert response is not None and response.status == (401 if token != ADMIN_TOKEN else 404)
        lines = audit.read_text().splitlines()
        assert len(lines) == 2
        for line, authorized in zip(lines, (False, True), strict=True):
            entry = json.loads(line)
            assert len(line) < 5000
            assert entry["authorized"] is authorized and entry["truncated"] is True
            assert entry["path"] == ("/v1/consumers/" + "p" * 3000)[:256]
            assert entry["query"] == {f"k{i}": "v" * 256 for i in range(8)}


def test_a_gzip_body_is_not_inflated_while_memory_is_over_the_limit() -> None:
    # Before: the limiter was asked at the headers only; a body admitted then was inflated (up to
    # max_request_body_size, JSON parsed at about 4× its size) however short memory had become,
    # by as many worker threads at once as there were such bodies (up to the executor's 6).
    config = {"processors": {"memory_limiter": {"check_interval": 3600}}}  # we say when it is over
    with running_processor(config) as running:
        body = gzip.compress(request_with_spans(3).SerializeToString())
        conn = Conn(_http_port(running))
        try:
            conn.send(
                post_head(
                    "/v1/traces",
                    {"Content-Type": PB, "Content-Encoding": "gzip", "Content-Length": str(len(body))},
                )
                + body[:10]
            )
            time.sleep(0.3)  # admitted: the headers were read while memory was fine
            running.processor.memory.over = True
            conn.send(body[10:])
            response = conn.read_response()
        finally:
            conn.sock.close()
            running.processor.memory.over = False
        assert response is not None and response.status == 503
        assert response.headers["retry-after"] == "5"
        assert (
            sample(
                running.scrape(), "apiusage_export_requests_total", transport="http", outcome="memory_limit"
            )
            == 1
        )
        assert (sample(running.scrape(), "apiusage_spans_received_total", transport="http") or 0) == 0


def test_a_large_grpc_message_that_arrives_when_memory_is_over_is_refused_retryably() -> None:
    # Before: the limiter was asked when the call's headers came; a 2 MiB message finishing after
    # memory ran short was accepted into the queue all the same.
    config = {"processors": {"memory_limiter": {"check_interval": 3600}}}
    with running_processor(config) as running:
        host, port = running.grpc_endpoint.rsplit(":", 1)
        message = request_with_spans(3).SerializeToString()
        message += b"\x0a\x00" * ((2 << 20) // 2)  # 1 MiB of empty ResourceSpans: still 3 spans
        client = StallingClient(host, int(port))
        try:
            stream = client.open_call(len(message), 0)
            client.conn.send_data(stream, message[:1000])
            client.pump(0.3)  # the call is in, waiting for the rest of its message
            running.processor.memory.over = True
            sent = 1000
            deadline = time.monotonic() + 10
            while sent < len(message) and time.monotonic() < deadline and not client.closed:
                size = min(
                    client.conn.local_flow_control_window(stream),
                    client.conn.max_outbound_frame_size,
                    len(message) - sent,
                )
                if size <= 0:
                    client.pump(0.05)
                    continue
                last = sent + size == len(message)
                client.conn.send_data(stream, message[sent : sent + size], end_stream=last)
                sent += size
                client._flush()
            client.wait_answered([stream], 10)
        finally:
            client.close()
            running.processor.memory.over = False
        assert sent == len(message)
        assert client.answers[stream].grpc_status == "14"  # UNAVAILABLE: retry
        assert (
            sample(
                running.scrape(), "apiusage_export_requests_total", transport="grpc", outcome="memory_limit"
            )
            == 1
        )
        assert (sample(running.scrape(), "apiusage_spans_received_total", transport="grpc") or 0) == 0


def _silent_grpc_clients(running: RunningProcessor, n: int) -> list[StallingClient]:
    """`n` HTTP/2 connections that finish the handshake and then open no call."""
    host, port = running.grpc_endpoint.rsplit(":", 1)
    clients = []
    for _ in range(n):
        clients.append(StallingClient(host, int(port)))
    return clients


def _pump_all(clients: list[StallingClient], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(c.closed for c in clients):
        for client in clients:
            client.pump(0.001)


def test_grpc_connections_past_max_connections_are_refused() -> None:
    # Before: every silent HTTP/2 connection was held for ever (1,000 clients: 1,000 descriptors),
    # so with the common `ulimit -n` of 1024 no port, nor SQLite, could open a file.
    grpc_config = {"max_connections": 50, "max_connection_idle": "1h"}
    with running_processor({"receivers": {"otlp": {"protocols": {"grpc": grpc_config}}}}) as running:
        clients = _silent_grpc_clients(running, 80)
        try:
            _pump_all(clients, 3)
            assert sum(not c.closed for c in clients) == 50
        finally:
            for client in clients:
                client.close()


def test_idle_grpc_connections_are_closed_and_senders_get_through_again() -> None:
    grpc_config = {"max_connections": 50, "max_connection_idle": "1s"}
    with running_processor({"receivers": {"otlp": {"protocols": {"grpc": grpc_config}}}}) as running:
        clients = _silent_grpc_clients(running, 50)
        try:
            _pump_all(clients, 6)  # GOAWAY after the idle second, then the close
            assert sum(c.closed for c in clients) == 50
        finally:
            for client in clients:
                client.close()
        with grpc.insecure_channel(running.grpc_endpoint) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=ExportTraceServiceRequest.SerializeToString,
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
            assert export(request_with_spans(3), timeout=5) == ExportTraceServiceResponse()
        running.wait_processed(3)


def test_stopping_with_a_client_not_reading_is_quick_and_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before: stop waited out the 5 s grace for a pipelined answer the client would never read,
    # then uvicorn logged "Exception in ASGI application" with a CancelledError traceback.
    with http_server(max_connections=4, send_timeout=60) as server:
        sock = non_reader(server.port, GET_BIG * 2)
        try:
            wait_until(lambda: open_connections(server)[1] > 0, 5, "an answer stuck in a connection")
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 3
        finally:
            sock.close()
    assert not [r for r in caplog.records if r.exc_info or "Exception in ASGI" in r.getMessage()]


def test_serve_raises_its_open_file_limit_to_the_hard_limit(tmp_path: Path) -> None:
    # Every connection costs a descriptor: under the common soft limit of 1024, a thousand silent
    # connections left none for the state store. `apiusage serve` raises it, as Go programs do.
    import resource
    import subprocess

    from tests.support.processor import LOOPBACK_CONFIG, apiusage_command, merge

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard <= 256:
        pytest.skip(f"the hard limit on open files is {hard}: nothing to raise")
    config = tmp_path / "apiusage.yaml"
    config.write_text(json.dumps(merge(LOOPBACK_CONFIG, {"state": {"enabled": False}})))

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    process = subprocess.Popen(
        [*apiusage_command(), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lower,
    )
    try:
        assert process.stdout is not None
        assert "ready" in process.stdout.readline()
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        infinite = hard == resource.RLIM_INFINITY
        assert line.split()[3:5] == ([str(1 << 20), "unlimited"] if infinite else [str(hard)] * 2)
    finally:
        process.terminate()
        process.communicate(timeout=15)
