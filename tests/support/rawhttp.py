"""A raw-socket HTTP/1.1 client for hostile-input tests: sends exactly the bytes given."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    raw_head: bytes = field(repr=False, default=b"")


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


class Conn:
    """One connection; `read_response` parses one answer (Content-Length framed, as ours are)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = connect(port, timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more; False when the server closed (or reset) the connection."""
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def read_response(self, timeout: float = 5.0) -> Response | None:
        """The next response, or None if the connection closed first; TimeoutError past `timeout`."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no response head within the timeout")
            if not self._fill(deadline):
                return None
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if time.monotonic() > deadline:
                raise TimeoutError("response body incomplete within the timeout")
            if not self._fill(deadline):
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(status, headers, body, head)

    def closed_by_server(self, timeout: float = 3.0) -> bool:
        """True when the server closes the connection within `timeout` (after any bytes it sends)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not self._fill(deadline):
                    return True
            except TimeoutError:
                return False
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> Response | None:
    """Send `data` on a new connection and read one response."""
    with Conn(port, timeout) as conn:
        conn.send(data)
        return conn.read_response(timeout)


def post_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
