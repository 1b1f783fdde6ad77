"""Forward accepted OTLP requests to a backend: traces (so exemplars lead to real traces), and the
metrics and logs that SDKs pointed at the processor send along, as a Collector pipeline would.

Receivers hand over the body of every accepted request; a thread posts them to
`<endpoint>/v1/traces`, `/v1/metrics` or `/v1/logs` in order.  Trace bodies are
protobuf; metrics and logs bodies go as they came (protobuf or JSON, gzipped or not),
never decoded here.  Each attempt has one deadline (`timeout`)
for sending and the whole answer, of which at most 64 KiB is read: a backend that
trickles its answer or sends one without end cannot hold the thread.  The queue is
bounded in requests and in bytes (the body being sent included) and `forward()`
never blocks: when the backend is slow, down or never answers, new bodies are
dropped (`forward()` says so) and counted, and ingestion goes on at full speed.
Metrics and logs together take at most half of either bound while traces are forwarded
too, so a flood of logs cannot crowd the traces (the exemplars' targets) out.  A backend's
Retry-After is waited for (up to MAX_RETRY_AFTER); `stop()` gives up at its deadline on
what is left and counts each such request as a failure.
"""

from __future__ import annotations

import email.utils
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

__all__ = ["Forwarder", "SIGNALS", "PROTOBUF", "JSON", "QUEUED", "DROPPED", "OFF"]

log = logging.getLogger("apiusage.processor.forward")
_RETRIES = 3
#: Of a response body only this much is read (OTLP answers are a few bytes); the rest is not
#: read and the connection is closed instead of reused.
MAX_RESPONSE_BYTES = 64 << 10
#: The OTLP signals and the path each is posted to under the endpoint (OTLP/HTTP spec).
SIGNALS = {"traces": "/v1/traces", "metrics": "/v1/metrics", "logs": "/v1/logs"}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_OUTCOMES = ("success", "failure", "dropped")
#: The longest Retry-After honoured: the queue waits behind it, and new requests are dropped meanwhile.
MAX_RETRY_AFTER = 30.0
# What forward() did with a body: queued it, dropped it (queue full, or stopping; counted), or
# nothing, its signal being left out of exporters.otlp.signals.
QUEUED, DROPPED, OFF = "queued", "dropped", "off"


class _Item:
    """One queued request: its signal, its body as received, and how that body is encoded."""

    __slots__ = ("signal", "body", "headers")

    def __init__(self, signal: str, body: bytes, headers: dict[str, str]) -> None:
        self.signal = signal
        self.body = body
        self.headers = headers


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
        base = url.path.rstrip("/") or ""
        self._paths = {signal: base + path for signal, path in SIGNALS.items()}
        self._timeout = float(config.timeout)
        # The configured headers win, as before; only the body's own encoding is set per request.
        self._extra = dict(config.headers)
        self.signals = frozenset(config.signals)
        self._protobuf = {"Content-Type": PROTOBUF, **self._extra}
        self._max = config.max_queue_requests
        self._max_bytes = config.max_queue_bytes
        self._bytes = 0  # queued bodies and the one being sent
        # Metrics and logs: their queued requests, and their bytes queued or being sent; they may
        # fill half the queue when traces share it.
        self._shared = "traces" in self.signals
        self._other_requests = 0
        self._other_bytes = 0
        self._abandon = False  # stop() is past its deadline: no more attempts
        self._dropping = False  # log once per episode
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._conn: http.client.HTTPConnection | None = None
        #: Requests per signal and outcome (success, failure: gave up; dropped: never queued).
        self.outcomes = {signal: dict.fromkeys(_OUTCOMES, 0) for signal in SIGNALS if signal in self.signals}
        self._thread = threading.Thread(target=self._run, name="apiusage-forward", daemon=True)

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._thread.start()

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def stopping(self) -> bool:
        return self._stopping

    def forward(
        self, body: bytes, signal: str = "traces", content_type: str = PROTOBUF, gzipped: bool = False
    ) -> str:
        """Queue `body` for `<endpoint>/v1/<signal>`: QUEUED, DROPPED (counted) when it does not fit,
        or OFF when `signal` is not in exporters.otlp.signals.

        `content_type` and `gzipped` describe the body as given, which is sent unchanged."""
        if signal not in self.signals:
            return OFF
        if content_type == PROTOBUF and not gzipped:
            headers = self._protobuf
        else:
            headers = {"Content-Type": content_type, **self._extra}
            if gzipped:
                headers["Content-Encoding"] = "gzip"
        other = signal != "traces"
        with self._cond:
            if (
                len(self._queue) >= self._max
                or self._bytes + len(body) > self._max_bytes
                or self._stopping
                or (other and self._shared and self._over_share(len(body)))
            ):
                self.outcomes[signal]["dropped"] += 1
                if not self._dropping and not self._stopping:
                    self._dropping = True
                    log.warning(
                        "OTLP backend %s:%s is behind: forward queue full (%d requests, "
                        "%d bytes); dropping requests (apiusage_forwarded_requests_total"
                        '{outcome="dropped"})',
                        self._host,
                        self._port,
                        len(self._queue),
                        self._bytes,
                    )
                return DROPPED
            self._queue.append(_Item(signal, body, headers))
            self._bytes += len(body)
            if other:
                self._other_requests += 1
                self._other_bytes += len(body)
            self._cond.notify()
        return QUEUED

    def _over_share(self, size: int) -> bool:
        """Whether a metrics or logs body of `size` bytes would take more than their half. The first
        always goes (within the whole queue): a larger body would otherwise be refused for ever."""
        return self._other_requests >= max(1, self._max // 2) or (
            self._other_bytes > 0 and self._other_bytes + size > self._max_bytes // 2
        )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
                if item.signal != "traces":
                    self._other_requests -= 1
            try:
                self._send(item)
            except Exception:  # the thread must outlive any one request
                self.outcomes[item.signal]["failure"] += 1
                self._close()
                log.exception("forwarding %s to %s:%s failed", item.signal, self._host, self._port)
            finally:
                with self._cond:
                    self._bytes -= len(item.body)
                    if item.signal != "traces":
                        self._other_bytes -= len(item.body)
                    if self._dropping and not self._queue:
                        self._dropping = False
                        log.info("OTLP backend %s:%s caught up", self._host, self._port)

    def _send(self, item: _Item) -> None:
        delay = 0.2
        for attempt in range(_RETRIES):
            status: int | None
            if self._abandon:
                reason = "given up at the shutdown deadline"
                break
            wait = delay
            try:
                status, retry_after = self._post(item)
            except (OSError, http.client.HTTPException) as exc:
                self._close()
                reason = str(exc) or type(exc).__name__
                status = None
            else:
                if 200 <= status < 300:
                    self.outcomes[item.signal]["success"] += 1
                    return
                reason = f"HTTP {status}"
                if status not in (429, 502, 503, 504):
                    break  # not retryable (OTLP spec)
                if retry_after is not None:  # the OTLP spec: wait as long as the backend asks
                    wait = retry_after
            if attempt + 1 < _RETRIES and not self._stopping:
                with self._cond:  # stop() ends the wait
                    self._cond.wait_for(lambda: self._stopping, wait)
                delay *= 2
        self.outcomes[item.signal]["failure"] += 1
        log.warning("forwarding %s to %s:%s failed: %s", item.signal, self._host, self._port, reason)

    def _post(self, item: _Item) -> tuple[int, float | None]:
        """The answer's status and its Retry-After in seconds (None: absent or unreadable)."""
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
            conn.request("POST", self._paths[item.signal], body=item.body, headers=item.headers)
            response = conn.getresponse()
            try:
                whole = len(response.read(MAX_RESPONSE_BYTES + 1)) <= MAX_RESPONSE_BYTES
            except (OSError, http.client.HTTPException):
                # The status line came: it stands, whether the watchdog or the socket's own read
                # timeout (first when the watchdog's thread runs late) ends the body.
                whole = False
            if not whole or not response.isclosed() or expired.is_set():
                # Larger than any OTLP answer, or cut at the deadline after its status line (which
                # stands): not read on, not reused.
                self._close()
            return response.status, _retry_after(response.getheader("Retry-After"))
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
        yield selfmetrics.FORWARDED_REQUESTS.filled(
            {
                (signal, outcome): n
                for signal, outcomes in self.outcomes.items()
                for outcome, n in outcomes.items()
            }
        )
        yield selfmetrics.FORWARD_QUEUE_REQUESTS.family(self.depth)
        yield selfmetrics.FORWARD_QUEUE_BYTES.family(self._bytes)

    def stop(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Send what is queued (bounded by `timeout`), then stop; what is left then is given up on
        and counted as failures, the request being sent cut off."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.ident is None:  # never started (a start-up that failed half-way)
            self._close()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                self._abandon = True
                left = list(self._queue)
                self._queue.clear()
                for item in left:
                    self.outcomes[item.signal]["failure"] += 1
                    self._bytes -= len(item.body)
                    if item.signal != "traces":
                        self._other_requests -= 1
                        self._other_bytes -= len(item.body)
            if left:
                log.warning(
                    "stopping: %d requests not forwarded to %s:%s within %gs",
                    len(left),
                    self._host,
                    self._port,
                    timeout,
                )
            conn = self._conn
            if conn is not None:
                self._expire(conn, threading.Event())  # the send in progress fails now
            self._thread.join(1.0)
        self._close()

    def shutdown(self, deadline: float) -> bool:
        """stop() within DRAIN_TIMEOUT and `deadline`. Forwarding is best effort: what is dropped
        is counted (outcome="dropped"), not part of the exit status."""
        self.stop(max(0.0, min(DRAIN_TIMEOUT, deadline - time.monotonic())))
        return True


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), at most
    MAX_RETRY_AFTER."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit(), not to float()
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
