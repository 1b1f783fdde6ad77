"""Helpers for the network attack tests: an in-process HttpServer and clients that never read."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager

from apiusage.processor._httpserver import HttpServer, Limits, Reply, Request

BIG = b"x" * (8 << 20)  # larger than what loopback's kernel buffers take (about 2.5 MB here)


async def _handle(request: Request) -> Reply:
    if request.path == "/slow":
        await asyncio.sleep(3)
    return Reply(200, BIG if request.path == "/big" else b"small\n")


@contextmanager
def http_server(tls: ssl.SSLContext | None = None, **limits: float) -> Iterator[HttpServer]:
    """A real HttpServer on 127.0.0.1:0 answering /big (8 MiB), /slow (after 3 s) and anything else."""
    known = {f.name for f in dataclasses.fields(Limits)}  # so the tests also run on the code before
    server = HttpServer(
        "127.0.0.1:0",
        _handle,
        "test.endpoint",
        "attack",
        tls,
        limits=Limits(**{k: v for k, v in limits.items() if k in known}),
    )  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def open_connections(server: HttpServer) -> tuple[int, int]:
    """(connections the server holds, bytes of answers waiting in its buffers for their clients)."""
    connections = list(server._server.server_state.connections)
    return len(connections), sum(c.transport.get_write_buffer_size() for c in connections)


def non_reader(port: int, request: bytes, tls: ssl.SSLContext | None = None) -> socket.socket:
    """A client with a tiny receive window that sends `request` and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    sock.sendall(request)
    return sock


def get_small(port: int, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> bytes:
    """A well-behaved client's GET /: the status line it was answered."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.settimeout(timeout)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in data and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0]
