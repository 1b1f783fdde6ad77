"""Trace backends that misbehave on purpose: each connection gets the next scripted answer."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Answer = Callable[[socket.socket, "ScriptedBackend"], None]

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"


def _read_request(conn: socket.socket) -> bool:
    """Read one request (headers and Content-Length body); False when the client went away."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        body += chunk
    return True


def answer_ok(conn: socket.socket, backend: ScriptedBackend) -> None:
    """200 to every request on the connection (keep-alive)."""
    while _read_request(conn):
        backend.requests += 1
        conn.sendall(OK)


def _trickle(conn: socket.socket, backend: ScriptedBackend, start: bytes, drip: bytes) -> None:
    """Read the request, send `start`, then `drip` every 0.2 s (1,000 times, or until stopped)."""
    if not _read_request(conn):
        return
    backend.requests += 1
    conn.sendall(start)
    for _ in range(1000):
        if backend.stopping.is_set():
            return
        conn.sendall(drip)
        time.sleep(0.2)


def answer_trickling(conn: socket.socket, backend: ScriptedBackend) -> None:
    """A 200 whose 1,000-byte body comes one byte every 0.2 s: each read is quick, the answer never."""
    _trickle(conn, backend, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"x")


def answer_endless(conn: socket.socket, backend: ScriptedBackend) -> None:
    """A 200 announcing 100 MiB and sending it as fast as the client reads it."""
    if not _read_request(conn):
        return
    backend.requests += 1
    total = 100 << 20
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
    block = b"\0" * 65536
    while backend.body_sent < total and not backend.stopping.is_set():
        conn.sendall(block)
        backend.body_sent += len(block)


class ScriptedBackend:
    """A loopback HTTP server: connection i is answered by `script[i]` (the last one repeats)."""

    def __init__(self, script: list[Answer]) -> None:
        self._script = script
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.requests = 0
        self.body_sent = 0
        self.connections = 0
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accept = threading.Thread(target=self._run, daemon=True)
        self._accept.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self._script[min(self.connections, len(self._script) - 1)]
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn, answer), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, answer: Answer) -> None:
        conn.settimeout(10)
        with conn:
            try:
                answer(conn, self)
            except OSError:
                pass  # the client closed: what the test is about

    def close(self) -> None:
        self.stopping.set()
        self._accept.join(5)
        for conn in self._conns:  # wakes the threads blocked reading an idle connection
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)
        self._server.close()


def answer_trickling_head(conn: socket.socket, backend: ScriptedBackend) -> None:
    """The start of a status line, then a blank every 0.2 s: the status code never comes."""
    _trickle(conn, backend, b"HTTP/1.1", b" ")
