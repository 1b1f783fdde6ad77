"""A small threaded HTTP/1.1 server shared by the OTLP/HTTP receiver and the metrics endpoint."""

from __future__ import annotations

import errno
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .config import split_endpoint

__all__ = ["BindError", "HttpServer", "QuietHandler", "Served", "server_tls_context"]


def server_tls_context(cert_file: str, key_file: str, client_ca_file: str | None) -> ssl.SSLContext:
    """TLS 1.2+ server context; with a client CA, a client certificate is required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class BindError(OSError):
    """The configured endpoint cannot be bound; the message names the config key to change."""


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, bounded waits, no per-request stderr lines."""

    protocol_version = "HTTP/1.1"
    server_version = "apiusage"
    sys_version = ""
    timeout = 30  # a client that stops sending mid-request cannot hold a thread forever

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            # The handshake runs here, on this connection's thread, under its timeout: a slow
            # or broken client cannot stall the accept loop.
            try:
                self.connection.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
                self.handshake_failed = True

    def handle(self) -> None:
        if getattr(self, "handshake_failed", False):
            return
        super().handle()

    def send_body(self, status: int, body: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    slots: threading.BoundedSemaphore | None = None

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        # One thread per connection, but never more than max_connections of them: past it a
        # client gets a plain 503 and the socket is closed, so threads and buffers stay bounded.
        if self.slots is not None and not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                                b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            if self.slots is not None:
                self.slots.release()


class HttpServer:
    def __init__(self, endpoint: str, handler: type[BaseHTTPRequestHandler], config_key: str,
                 name: str, tls: ssl.SSLContext | None = None,
                 max_connections: int | None = None) -> None:
        host, port = split_endpoint(endpoint)
        host = host or "0.0.0.0"  # ":4318", as in the Collector: every interface
        self.name = name
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_cls = type("Server", (_Server,), {"address_family": family})
        try:
            self._server = server_cls((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BindError(exc.errno, f"{endpoint} is already in use: set {config_key} to "
                                           "a free port") from None
            raise BindError(exc.errno, f"cannot listen on {endpoint} ({config_key}): "
                                       f"{exc.strerror}") from None
        if max_connections:
            self._server.slots = threading.BoundedSemaphore(max_connections)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True,
                                                  do_handshake_on_connect=False)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.2}, name=name, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait for ever on a loop never started
            self._server.shutdown()
        self._server.server_close()


class Served:
    """Base of the components that answer over an HttpServer (receiver, metrics, admin)."""

    _server: HttpServer

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()
