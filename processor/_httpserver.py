"""The HTTP/1.1 servers (OTLP/HTTP receiver, metrics, admin): uvicorn + httptools, one event loop each.

Framing (Content-Length, chunked, pipelining) is httptools' (llhttp, strict).  What uvicorn
lacks is added by `_Protocol`: a deadline for a request's headers and for its body, a bound
on header bytes, and a connection bound that closes the connection waiting longest for its
headers (or idle) instead of refusing a newcomer, so trickling clients cannot starve senders.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from .config import split_endpoint
from .errors import ProcessorError
from .selfmetrics import Family

__all__ = [
    "BindError",
    "BodyTooLarge",
    "HttpServer",
    "Limits",
    "Reply",
    "Request",
    "Served",
    "log_refusals",
    "server_tls_context",
]

log = logging.getLogger("apiusage.processor.http")

TEXT = "text/plain; charset=utf-8"


def server_tls_context(cert_file: str, key_file: str, client_ca_file: str | None) -> ssl.SSLContext:
    """TLS 1.2+ server context; with a client CA, a client certificate is required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# At stop, requests in flight may finish within this many seconds; then their connections are cut.
GRACEFUL_SHUTDOWN = 5


class BindError(ProcessorError, OSError):
    """The configured endpoint cannot be bound; the message names the config key to change."""


class BodyTooLarge(ProcessorError, ValueError):
    """A request body went over the limit while it was being read."""


class ClientGone(ProcessorError):
    """The client closed the connection (or it was closed on a deadline) before its body arrived."""


# What a refusal made by the server itself (not by a handler) is called: kind, status, message.
Refusal = Callable[[str, str], None]


def log_refusals(name: str) -> Refusal:
    """An on_refused for servers without a counter: the first refusal of each kind is a warning."""
    seen: set[str] = set()

    def refused(kind: str, message: str) -> None:
        level = logging.DEBUG if kind in seen else logging.WARNING
        seen.add(kind)
        log.log(
            level,
            "%s endpoint refused a request (%s): %s; further ones are logged at debug level",
            name,
            kind,
            message,
        )

    return refused


@dataclass(frozen=True)
class Limits:
    """Per-server bounds on connections and on how long a request may take to arrive."""

    max_connections: int = 64
    header_timeout: float = 10.0  # connect (or first byte of a request) → end of its headers
    body_timeout: float = 60.0  # end of headers → end of body
    idle_timeout: float = 30.0  # keep-alive connection with no request
    max_header_bytes: int = 64 * 1024
    # An answer the kernel could not take at once must be taken by the client within this:
    # a client that stops reading holds its buffered answer (and its slot) no longer.
    send_timeout: float = 60.0
    # Called once per refusal the server answers itself (kind, message): counts or logs it.
    on_refused: Refusal = field(default=lambda kind, message: None)


@dataclass
class Request:
    """One request as a handler sees it; the body is read on demand."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its first value
    client: str
    _receive: Callable[[], Awaitable[dict]]
    body_read: bool = False

    @property
    def has_body(self) -> bool:
        return "transfer-encoding" in self.headers or self.headers.get("content-length", "0") != "0"

    async def body(self, limit: int, check: Callable[[], None] | None = None, every: int = 1 << 20) -> bytes:
        """The whole body; BodyTooLarge as soon as more than `limit` bytes arrived.

        `check` is called each time `every` more bytes arrived: it raises to stop reading (say,
        when memory ran short while many large bodies arrive at once).
        """
        chunks: list[bytes] = []
        total = 0
        next_check = every
        while True:
            message = await self._receive()
            if message["type"] != "http.request":
                raise ClientGone("the client went away before sending its whole body")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                raise BodyTooLarge(f"body is larger than the limit of {limit} bytes")
            chunks.append(chunk)
            if check is not None and total >= next_check:
                next_check = total + every
                check()
            if not message.get("more_body", False):
                self.body_read = True
                return b"".join(chunks)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False


Handler = Callable[[Request], Awaitable[Reply]]


def asgi_app(handle: Handler, name: str) -> Callable:
    """A raw ASGI app around `handle`: an exception is one log line and a one-line 500."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; nothing else is served
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            headers.setdefault(raw_name.decode("latin-1"), raw_value.decode("latin-1"))
        client = scope.get("client")
        request = Request(
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            headers,
            client[0] if client else "",
            receive,
        )
        try:
            reply = await handle(request)
        except ClientGone:
            return  # nobody to answer (a deadline's 408, if any, was sent by the protocol)
        except asyncio.CancelledError:
            # Only at shutdown, past the grace period: uvicorn would log a traceback for it.
            log.warning("%s: %s %s cut short by shutdown", name, request.method, request.path)
            return
        except Exception as exc:  # noqa: BLE001 — one line in the log, never a traceback to the client
            log.error("%s: %s %s failed: %s: %s", name, request.method, request.path, type(exc).__name__, exc)
            reply = Reply(500, b"internal error; see the processor's log\n", close=True)
        out = [
            (b"Content-Type", reply.content_type.encode("latin-1")),
            (b"Content-Length", str(len(reply.body)).encode("ascii")),
        ]
        out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
        if reply.close or (request.has_body and not request.body_read):
            # An unread body would be parsed as the next request's bytes: close instead.
            out.append((b"Connection", b"close"))
        try:
            await send({"type": "http.response.start", "status": reply.status, "headers": out})
            await send({"type": "http.response.body", "body": reply.body})
        except asyncio.CancelledError:  # past the grace period, waiting for a client to read
            log.warning("%s: the answer to %s %s cut short by shutdown", name, request.method, request.path)

    return app


class _Cycle(RequestResponseCycle):
    """One write per response: status line, headers (names as the handler spelt them) and body."""

    _start: dict

    async def send(self, message: dict) -> None:  # type: ignore[override]
        if self.disconnected:
            return
        if message["type"] == "http.response.start" and not self.response_started:
            self.response_started = True
            self.waiting_for_100_continue = False
            self._start = message
            return
        if message["type"] != "http.response.body" or not self.response_started or self.response_complete:
            raise RuntimeError(f"unexpected ASGI message {message['type']!r}")
        if message.get("more_body", False):
            raise RuntimeError("responses are sent in one piece")
        content = [STATUS_LINE[self._start["status"]]]
        close = False
        for name, value in [(n.title(), v) for n, v in self.default_headers] + list(self._start["headers"]):
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                raise RuntimeError(f"invalid response header {name!r}")
            close = close or (name.lower() == b"connection" and b"close" in value.lower())
            content += [name, b": ", value, b"\r\n"]
        if not self.keep_alive and not close:
            content.append(b"Connection: close\r\n")
        self.keep_alive = self.keep_alive and not close
        content.append(b"\r\n")
        if self.scope["method"] != "HEAD":
            content.append(message.get("body", b""))
        if self.flow.write_paused:
            await self.flow.drain()
            if self.disconnected:  # aborted while the client was not reading the previous answer
                return
        # A single write: with headers and body in separate segments a client's delayed ACK
        # could hold the body back ~40 ms on a kept-alive connection.
        self.transport.write(b"".join(content))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.linger()
        self.on_response()

    def linger(self) -> None:  # replaced by the protocol's
        self.transport.close()


BODY_HIGH_WATER = 1 << 20  # body bytes buffered per connection before reading pauses for the handler
LINGER = 2.0  # seconds a connection is drained after an early answer before it is closed

_PHRASES = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus header/body deadlines, a header size bound and eviction."""

    limits: Limits  # set on the per-server subclass

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._send_timer: asyncio.TimerHandle | None = None
        self._stalled_since: float | None = None  # answer bytes waiting for the client to read
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._waiting_since: float | None = time.monotonic()  # no request headers in hand
        self._body_since: float | None = None
        self._answered_itself = False
        self._discarding = False
        self._linger_since = 0.0
        if self._at_bound() and not self._evict_one():
            # Every connection is busy with a request: the newcomer is told to come back.
            self._connected(transport)
            self._refuse(
                503,
                "connection_limit",
                f"all {self.limits.max_connections} connections are busy; retry later",
                retry_after=True,
            )
            return
        self._connected(transport)
        self._arm(self.limits.header_timeout, self._headers_late)

    def _connected(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        # Any byte the kernel cannot take pauses writing (and starts the send deadline): without
        # it, an answer under 64 KiB could sit unsent on a connection closed by us for ever.
        # (After uvicorn's connection_made: a TLS transport may pause at once, and needs self.flow.
        # TLS pauses at size >= high, plain TCP at size > high: both pause at the first byte.)
        tls = transport.get_extra_info("ssl_object") is not None
        transport.set_write_buffer_limits(high=1 if tls else 0, low=0)

    def _at_bound(self) -> bool:
        """Whether max_connections are open, not counting those draining after an early answer.

        Draining ones end within LINGER seconds; past max_connections of them the oldest is closed
        at once, so they stay bounded too.
        """
        active: list[_Protocol] = []
        draining: list[_Protocol] = []
        for c in self.connections:
            # A closed connection still holding an unread answer holds its memory: it counts.
            if isinstance(c, _Protocol) and (not c.transport.is_closing() or c._stalled_since is not None):
                (draining if c._discarding else active).append(c)
        if len(draining) >= self.limits.max_connections:
            min(draining, key=lambda c: c._linger_since)._close_now()
        return len(active) >= self.limits.max_connections

    def _close_now(self) -> None:
        """Close; with an answer the client has not read, drop it (a close would wait for it)."""
        if self._stalled_since is not None:
            self.transport.abort()
        else:
            self.transport.close()

    def _evict_one(self) -> bool:
        """Close the connection waiting longest for request headers, else the one longest not reading
        its answer, else the one longest sending its body; False if none."""
        waiting = [
            c
            for c in self.connections
            if isinstance(c, _Protocol)
            and c._waiting_since is not None
            and not c._discarding
            and not c.transport.is_closing()
            and (c.cycle is None or c.cycle.response_complete)
        ]  # not while its handler runs
        if waiting:
            victim = min(waiting, key=lambda c: c._waiting_since or 0.0)
            if victim._header_bytes:
                victim._refuse(
                    503,
                    "connection_limit",
                    "connection limit reached; this request was the slowest to send its headers",
                    retry_after=True,
                )
            else:
                victim._close_now()  # idle keep-alive: nothing lost
            return True
        stalled = [c for c in self.connections if isinstance(c, _Protocol) and c._stalled_since is not None]
        if stalled:
            victim = min(stalled, key=lambda c: c._stalled_since or 0.0)
            victim._send_late("still unread at the connection limit")
            return True
        bodies = [
            c
            for c in self.connections
            if isinstance(c, _Protocol)
            and c._body_since is not None
            and not c._discarding
            and not c.transport.is_closing()
        ]
        if bodies:
            victim = min(bodies, key=lambda c: c._body_since or 0.0)
            victim._refuse(
                503,
                "connection_limit",
                "connection limit reached; this request was the slowest to send its body",
                retry_after=True,
            )
            return True
        return False

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, kind: str, message: str, retry_after: bool = False) -> None:
        """Answer (status, one-line message) and close: for requests the handler never saw."""
        self._disarm()
        if self.transport.is_closing() or self._answered_itself:
            return
        self._answered_itself = True
        self._waiting_since = self._body_since = None
        if self.cycle is not None and not self.cycle.response_complete:
            if self.cycle.response_started:  # the handler is answering: just stop reading
                self.transport.close()
                return
            self.cycle.response_started = True  # the handler's answer, if any, is discarded
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.limits.on_refused(kind, message)
        body = message.encode("utf-8", "replace") + b"\n"
        head = [
            b"HTTP/1.1 %d %s" % (status, _PHRASES.get(status, b"Error")),
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
        ]
        if retry_after:
            head.append(b"Retry-After: 1")
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self._linger()

    def _linger(self) -> None:
        """Close after an answer given before the request was read to its end.

        Closing at once, with the client still sending, resets the connection and the client may
        never read the answer; so the write side is shut, what still arrives is discarded
        (never buffered), and the connection is closed when the client closes or after LINGER s.
        """
        self._disarm()
        self._discarding = True
        self._linger_since = time.monotonic()
        self._waiting_since = self._body_since = None
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER, self.transport.close)

    def _headers_late(self) -> None:
        if self._header_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # no request began: an idle connection, nothing to answer
            return
        self._refuse(408, "timeout", f"request headers not complete within {self.limits.header_timeout:g} s")

    def _body_late(self) -> None:
        self._refuse(408, "timeout", f"request body not complete within {self.limits.body_timeout:g} s")

    def pause_writing(self) -> None:
        """The kernel's buffer is full: the client has send_timeout to take what is left."""
        super().pause_writing()
        if self._send_timer is None:
            self._stalled_since = time.monotonic()
            self._send_timer = self.loop.call_later(
                self.limits.send_timeout, self._send_late, f"not read within {self.limits.send_timeout:g} s"
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        self._end_stall()

    def _end_stall(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        self._stalled_since = None

    def _send_late(self, why: str) -> None:
        """Drop a connection whose client does not read its answer (it may still be sending)."""
        _slow_readers.note(type(self).__name__, why)
        self._end_stall()
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_stall()
        self._disarm()
        self._waiting_since = self._body_since = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        self._unset_keepalive_if_required()
        headers_pending = self._waiting_since is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "malformed", "protocol upgrades are not supported")
            return
        except httptools.HttpParserError as exc:
            # e.g. a chunk size of -1, `Transfer-Encoding: xchunked`, a Content-Length that is not
            # plain ASCII digits or does not fit 64 bits.
            reason = _reason(exc)
            if "PRI/Upgrade" in reason:  # llhttp's words for the HTTP/2 connection preface
                reason = "HTTP/2 is not served on this port; send HTTP/1.1 (OTLP over HTTP/2 is gRPC)"
            self._refuse(400, "malformed", f"malformed HTTP request: {reason}")
            return
        if headers_pending and self._waiting_since is not None:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    "malformed",
                    f"request line and headers are larger than {self.limits.max_header_bytes} bytes",
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = max(self._header_bytes, 1)
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        if self._timer is None:  # after keep-alive; a first request keeps its deadline from connect
            self._arm(self.limits.header_timeout, self._headers_late)

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_header_bytes:
            raise ValueError("request target is too long")
        super().on_url(url)

    def on_headers_complete(self) -> None:
        self._waiting_since = None
        self._header_bytes = 0
        self._body_since = time.monotonic()
        self._arm(self.limits.body_timeout, self._body_late)
        # As uvicorn's, without WebSocket upgrades or limit_concurrency, with our cycle class.
        http_version = self.parser.get_http_version()
        self.scope["method"] = self.parser.get_method().decode("ascii")
        if http_version != "1.1":
            self.scope["http_version"] = http_version
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")  # a non-ASCII byte: a parser error, answered 400
        self.scope["path"] = urllib.parse.unquote(path) if "%" in path else path
        self.scope["raw_path"] = raw_path
        self.scope["query_string"] = parsed_url.query or b""
        existing = self.cycle
        self.cycle = cycle = _Cycle(
            scope=self.scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=False,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and self.parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        # A per-cycle hook over _Cycle.linger's default (a method, so mypy calls this assigning one).
        cycle.linger = lambda: self._linger() if cycle.more_body else self.transport.close()  # type: ignore[method-assign]
        if existing is None or existing.response_complete:
            self._start_asgi_task(self.cycle, self.app)
        else:  # pipelined: starts when the previous response is complete
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def on_body(self, body: bytes) -> None:
        # As uvicorn's but with a higher mark before reading pauses: at its 64 KiB every read of
        # a big body (asyncio reads up to 256 KiB) paused and resumed reading, one more event-loop
        # round each, and each round waits for the GIL behind the busy worker thread.
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > BODY_HIGH_WATER:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._body_since = None
        self._disarm()
        super().on_message_complete()

    def shutdown(self) -> None:
        """At server shutdown: a request still sending its body is told so now, not cut later."""
        if self._stalled_since is not None:
            # The client is not reading its answer: the grace period would only be waited out.
            self._send_late("unread at shutdown")
            return
        if self._body_since is not None and self.cycle is not None and not self.cycle.response_started:
            self._refuse(
                503, "shutting_down", "the processor is shutting down; retry later", retry_after=True
            )
            return
        super().shutdown()

    def on_response_complete(self) -> None:
        if self._discarding:
            return  # closing: no keep-alive timer, no pipelined request started
        super().on_response_complete()
        if not self.transport.is_closing() and self._body_since is None:
            self._waiting_since = time.monotonic()  # idle keep-alive: evictable, idle_timeout applies


class _Once:
    """A warning the first time per server, debug lines after: an unread answer is the client's fault."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def note(self, server: str, why: str) -> None:
        level = logging.DEBUG if server in self._seen else logging.WARNING
        self._seen.add(server)
        log.log(
            level,
            "%s: a client stopped reading its answer; connection aborted (%s); "
            "further ones are logged at debug level",
            server.removesuffix("Protocol"),
            why,
        )


_slow_readers = _Once()


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__context__ or exc.__cause__
    if cause is not None and not isinstance(cause, httptools.HttpParserError):
        text = f"{cause}"
    return text[:200]


class _Server(uvicorn.Server):
    """uvicorn's Server, listening with a TLS handshake deadline (uvicorn leaves asyncio's 60 s)."""

    handshake_timeout: float = 10.0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state, app_state=self.lifespan.state, _loop=_loop
            )

        loop = asyncio.get_running_loop()
        # asyncio refuses a handshake timeout without TLS.
        handshake = self.handshake_timeout if config.ssl is not None else None
        self.servers = [
            await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=handshake,
            )
            for sock in sockets or []
        ]
        self.started = True


class HttpServer:
    """One uvicorn server on a socket bound at construction, run on its own thread and event loop."""

    def __init__(
        self,
        endpoint: str,
        handle: Handler,
        config_key: str,
        name: str,
        tls: ssl.SSLContext | None = None,
        limits: Limits | None = None,
    ) -> None:
        host, port = split_endpoint(endpoint)
        host = host or "0.0.0.0"  # ":4318", as in the Collector: every interface
        self.name = name
        self.limits = limits or Limits()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise BindError(
                    exc.errno, f"{endpoint} is already in use: set {config_key} to a free port"
                ) from None
            raise BindError(
                exc.errno, f"cannot listen on {endpoint} ({config_key}): {exc.strerror}"
            ) from None
        self._socket = sock
        protocol = type(f"{name}Protocol", (_Protocol,), {"limits": self.limits})
        config = uvicorn.Config(
            asgi_app(handle, name),
            http=protocol,
            lifespan="off",
            log_config=None,
            log_level=logging.WARNING,  # uvicorn's start/stop chatter off; its errors still show
            access_log=False,
            proxy_headers=False,
            server_header=False,
            headers=[("Server", "apiusage")],
            timeout_keep_alive=max(1, int(self.limits.idle_timeout)),
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
            ws="none",
            ssl_context_factory=(lambda _config, _default: tls) if tls is not None else None,
        )
        config.load()
        self._server = _Server(config)
        self._server.handshake_timeout = self.limits.header_timeout
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    async def _serve(self) -> None:
        await self._server.serve(sockets=[self._socket])
        # Past the 5 s grace: connections still open (a body trickling in) are cut, not leaked.
        for connection in list(self._server.server_state.connections):
            connection.transport.abort()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # noqa: BLE001 — a dead server thread must say why, once
            log.error("%s server stopped: %s: %s", self.name, type(exc).__name__, exc)
        finally:
            self._socket.close()  # when stop() stopped waiting before the server ended

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def host(self) -> str:
        return self._socket.getsockname()[0]

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish (up to 5 s), close the socket; waits for
        the server's thread at most `timeout`."""
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout)
        if not self._thread.is_alive():  # else the server's thread closes it as it ends
            self._socket.close()


class Served:
    """Base of the components (component.py) that answer over an HttpServer (receiver, metrics,
    admin): the port is bound when built, served from start()."""

    _server: HttpServer
    families: tuple[Family, ...] = ()

    @property
    def name(self) -> str:
        return self._server.name

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def shutdown(self, deadline: float) -> bool:
        """Stop by `deadline`: requests in flight get up to GRACEFUL_SHUTDOWN seconds of it."""
        self._server.stop(max(0.0, min(10.0, deadline - time.monotonic())))
        return True
