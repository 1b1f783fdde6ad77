"""Forward accepted OTLP trace requests to a trace backend, so exemplars lead to real traces.

Receivers hand over the protobuf body of every accepted request; a thread posts
them to `<endpoint>/v1/traces` in order.  Each attempt has one deadline (`timeout`)
for sending and the whole answer, of which at most 64 KiB is read: a backend that
trickles its answer or sends one without end cannot hold the thread.  The queue is
bounded in requests and in bytes (the body being sent included) and `forward()`
never blocks: when the backend is slow, down or never answers, new bodies are
dropped and counted, and ingestion goes on at full speed.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from urllib.parse import urlsplit

from prometheus_client.core import Metric

from .. import selfmetrics
from ..config import OtlpForwarder

__all__ = ["Forwarder"]

log = logging.getLogger("apiusage.processor.forward")
_RETRIES = 3
#: Of a response body only this much is read (OTLP answers are a few bytes); the rest is not
#: read and the connection is closed instead of reused.
MAX_RESPONSE_BYTES = 64 << 10
#: At shutdown, what is queued is sent for at most this long.
DRAIN_TIMEOUT = 5.0


class Forwarder:
    """A component (component.py): one thread posting the queued bodies in order."""

    name = "forwarder"
    families = selfmetrics.owned_by("forwarder")

    def __init__(self, config: OtlpForwarder) -> None:
        url = urlsplit(config.endpoint)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._https else 80)
        self._path = (url.path.rstrip("/") or "") + "/v1/traces"
        self._timeout = float(config.timeout)
        self._headers = {"Content-Type": "application/x-protobuf", **dict(config.headers)}
        self._max = config.max_queue_requests
        self._max_bytes = config.max_queue_bytes
        self._bytes = 0  # queued bodies and the one being sent
        self._dropping = False  # log once per episode
        self._queue: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._conn: http.client.HTTPConnection | None = None
        self.outcomes = {"success": 0, "failure": 0, "dropped": 0}
        self._thread = threading.Thread(target=self._run, name="apiusage-forward", daemon=True)

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def forward(self, body: bytes) -> None:
        with self._cond:
            if len(self._queue) >= self._max or self._bytes + len(body) > self._max_bytes or self._stopping:
                self.outcomes["dropped"] += 1
                if not self._dropping and not self._stopping:
                    self._dropping = True
                    log.warning(
                        "trace backend %s:%s is behind: forward queue full (%d requests, "
                        "%d bytes); dropping requests (apiusage_forwarded_requests_total"
                        '{outcome="dropped"})',
                        self._host,
                        self._port,
                        len(self._queue),
                        self._bytes,
                    )
                return
            self._queue.append(body)
            self._bytes += len(body)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                body = self._queue.popleft()
            try:
                self._send(body)
            except Exception:  # the thread must outlive any one request
                self.outcomes["failure"] += 1
                self._close()
                log.exception("forwarding traces to %s:%s failed", self._host, self._port)
            finally:
                with self._cond:
                    self._bytes -= len(body)
                    if self._dropping and not self._queue:
                        self._dropping = False
                        log.info("trace backend %s:%s caught up", self._host, self._port)

    def _send(self, body: bytes) -> None:
        delay = 0.2
        for attempt in range(_RETRIES):
            try:
                status = self._post(body)
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                reason = str(exc) or type(exc).__name__
                status = None
            else:
                if 200 <= status < 300:
                    self.outcomes["success"] += 1
                    return
                reason = f"HTTP {status}"
                if status not in (429, 502, 503, 504):
                    break  # not retryable (OTLP spec)
            if attempt + 1 < _RETRIES and not self._stopping:
                time.sleep(delay)
                delay *= 2
        self.outcomes["failure"] += 1
        log.warning("forwarding traces to %s:%s failed: %s", self._host, self._port, reason)

    def _post(self, body: bytes) -> int:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=self._timeout)
        conn = self._conn
        # The socket timeout bounds each read, not the answer: one byte every 9 s would keep a
        # 10 s timeout from ever firing. The watchdog ends the attempt at the deadline.
        expired = threading.Event()
        watchdog = threading.Timer(self._timeout, self._expire, (conn, expired))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            whole = len(response.read(MAX_RESPONSE_BYTES + 1)) <= MAX_RESPONSE_BYTES
            if not whole or not response.isclosed() or expired.is_set():
                # Larger than any OTLP answer, or cut at the deadline after its status line (which
                # stands): not read on, not reused.
                self._close()
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set():
                raise TimeoutError(
                    f"no complete answer within {self._timeout:g}s (exporters.otlp.timeout)"
                ) from exc
            raise
        finally:
            watchdog.cancel()

    @staticmethod
    def _expire(conn: http.client.HTTPConnection, expired: threading.Event) -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read; the caller closes
            except OSError:
                pass

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def collect(self) -> Iterable[Metric]:
        """Its own Prometheus families (the forwarder is registered as a collector)."""
        yield selfmetrics.FORWARDED_REQUESTS.filled(self.outcomes)
        yield selfmetrics.FORWARD_QUEUE_REQUESTS.family(self.depth)
        yield selfmetrics.FORWARD_QUEUE_BYTES.family(self._bytes)

    def stop(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Send what is queued (bounded by `timeout`), then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout)
        self._close()

    def shutdown(self, deadline: float) -> bool:
        """stop() within DRAIN_TIMEOUT and `deadline`. Forwarding is best effort: what is dropped
        is counted (outcome="dropped"), not part of the exit status."""
        self.stop(max(0.0, min(DRAIN_TIMEOUT, deadline - time.monotonic())))
        return True
