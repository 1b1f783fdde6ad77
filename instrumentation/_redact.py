"""Keep secrets and client addresses out of every exported span.

The FastAPI/ASGI instrumentation records the query string (``http.url``, ``url.full``,
``url.query``), the caller's address (``net.peer.ip``, ``client.address``) and, when
header capture is configured, arbitrary request headers, ``Authorization`` and
``Cookie`` included. A hook cannot remove those: hooks run after some are set and
before others (response headers are captured after the last hook), and the OpenTelemetry
API can overwrite an attribute but not delete it. So this span processor does it, for
both semantic-convention generations:

``_on_ending`` is called by the SDK before any processor's ``on_end`` sees the span, so
before any exporter. (Scrubbing in ``on_start`` would be useless: the ASGI middleware
sets its creation attributes a second time right after starting the span.) It reaches
into the SDK span's attribute container (``Span._attributes``), the only place a delete
is possible (``Span.end()`` freezes the container before ``_on_ending``, and editing its
dict under its lock is far cheaper than building a new container on every request); if a
future SDK changes that, the failure is logged once, never raised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

_logger = logging.getLogger("apiusage.instrumentation")

# Whole URLs and targets: keep them, minus the query string and fragment.
URL_KEYS = frozenset({"http.url", "url.full", "http.target", "url.original"})
# Always dropped.
DROP_KEYS = frozenset({"url.query", "http.request.header.cookie", "http.response.header.set_cookie"})
# The caller's network identity on a SERVER span (old and stable conventions).
CLIENT_ADDRESS_KEYS = frozenset(
    {
        "client.address",
        "client.port",
        "client.socket.address",
        "client.socket.port",
        "net.peer.ip",
        "net.peer.port",
        "net.peer.name",
        "net.sock.peer.addr",
        "net.sock.peer.port",
        "net.sock.peer.name",
        "network.peer.address",
        "network.peer.port",
        "http.client_ip",
    }
)
HEADER_PREFIXES = ("http.request.header.", "http.response.header.")
_CANDIDATES = URL_KEYS | DROP_KEYS
_SERVER_CANDIDATES = _CANDIDATES | CLIENT_ADDRESS_KEYS
_INTERNAL = SpanKind.INTERNAL
_SERVER = SpanKind.SERVER
_PLAN_LIMIT = 256
_Plan = tuple[tuple[str, ...], tuple[str, ...]]
# Captured headers whose name suggests a credential, a session or a client address.
_SENSITIVE_HEADER = re.compile(
    r"(auth|token|secret|key|cookie|session|passw|credential|signature|"
    r"forwarded|real_ip|client_ip|connecting_ip)",
    re.IGNORECASE,
)


def normalise_header(name: str) -> str:
    """A header name the way OpenTelemetry spells it in attribute keys."""
    return name.strip().lower().replace("-", "_")


class Scrubber:
    """Decides what leaves: used by the span processor, and testable on plain dicts.

    What to do depends only on the attribute *keys* (which to drop, which URLs to check
    for a query), and the spans of one code path carry the same keys in the same order.
    So the decision is made once per key layout and kept in a small bounded cache of key
    names (never values); per span only the URL values are looked at.
    """

    def __init__(self, sensitive_headers: Iterable[str] = ()) -> None:
        self.sensitive_headers = frozenset(normalise_header(h) for h in sensitive_headers)

    @property
    def sensitive_headers(self) -> frozenset[str]:
        return self._sensitive_headers

    @sensitive_headers.setter
    def sensitive_headers(self, names: frozenset[str]) -> None:
        self._sensitive_headers = frozenset(names)
        # key layout -> (keys to drop, URL keys to check), for SERVER and for other spans
        self._server_plans: dict[tuple[str, ...], _Plan] = {}
        self._other_plans: dict[tuple[str, ...], _Plan] = {}

    def _header_is_sensitive(self, key: str) -> bool:
        name = key.split(".header.", 1)[1]
        return name in self._sensitive_headers or bool(_SENSITIVE_HEADER.search(name))

    def plan(self, keys: tuple[str, ...], server: bool) -> _Plan:
        """(keys to delete, URL keys whose value may need its query cut) for this key layout."""
        plans = self._server_plans if server else self._other_plans
        plan = plans.get(keys)
        if plan is None:
            candidates = _SERVER_CANDIDATES if server else _CANDIDATES
            drop = []
            urls = []
            for key in keys:
                if key in URL_KEYS:
                    urls.append(key)
                elif key in candidates or (
                    key.startswith(HEADER_PREFIXES) and self._header_is_sensitive(key)
                ):
                    drop.append(key)
            plan = (tuple(drop), tuple(urls))
            if len(plans) >= _PLAN_LIMIT:
                plans.clear()  # layouts that vary without end (e.g. every header captured)
            plans[keys] = plan
        return plan

    def changes(self, attributes: Mapping[str, Any], server: bool) -> tuple[list[str], dict[str, str]]:
        """(keys to delete, keys to rewrite) for one span's attributes."""
        store = getattr(attributes, "_dict", attributes)
        drop, urls = self.plan(tuple(store), server)
        return list(drop), _cut_queries(store, urls)

    def scrub(self, attributes: Mapping[str, Any], server: bool) -> dict[str, Any]:
        """A cleaned copy of ``attributes``."""
        drop, rewrite = self.changes(attributes, server)
        cleaned = {k: v for k, v in attributes.items() if k not in drop}
        cleaned.update(rewrite)
        return cleaned


def _cut_queries(store: Mapping[str, Any], urls: tuple[str, ...]) -> dict[str, str]:
    """The URL values that carry a query string or fragment, without it."""
    rewrite = {}
    for key in urls:
        value = store[key]
        if isinstance(value, str) and ("?" in value or "#" in value):
            rewrite[key] = value.partition("?")[0].partition("#")[0]
    return rewrite


class RedactingSpanProcessor(SpanProcessor):
    """Removes query strings, credentials and client addresses before any export."""

    def __init__(self, sensitive_headers: Iterable[str] = ()) -> None:
        self.scrubber = Scrubber(sensitive_headers)
        self._warned = False

    def _on_ending(self, span: Span) -> None:
        # Runs at the end of every span, so the common case is a few C-level operations:
        # INTERNAL spans (such as the ASGI send/receive spans) carry no request data and
        # are skipped (identity tests: hashing an Enum member runs Python code); for the
        # others the key layout's plan is one dict look-up, and only URL values are read.
        # The edits are those of Scrubber.changes(), made in place.
        try:
            kind = span._kind  # the public ``kind`` is a property: a Python call per span
            if kind is _INTERNAL:
                return
            container: Any = span._attributes
        except AttributeError:
            kind = span.kind
            if kind is _INTERNAL:
                return
            container = getattr(span, "_attributes", None)
            if container is None:
                return
        try:
            # Span.end() has frozen the container; only its dict allows a delete.
            store = container._dict
            if not store:
                return
            keys = tuple(store)
            scrubber = self.scrubber
            plans = scrubber._server_plans if kind is _SERVER else scrubber._other_plans
            drop, urls = plans.get(keys) or scrubber.plan(keys, kind is _SERVER)
            if drop or urls:
                with container._lock:
                    for key in drop:
                        store.pop(key, None)
                    for key in urls:
                        value = store[key]
                        if isinstance(value, str) and ("?" in value or "#" in value):
                            store[key] = value.partition("?")[0].partition("#")[0]
        except Exception:  # never break the host's request over telemetry
            self._warn_once()

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning(
                "apiusage: could not scrub span attributes with this OpenTelemetry SDK; "
                "query strings or client addresses may be exported",
                exc_info=True,
            )


def install(provider: Any, sensitive_headers: Iterable[str] = ()) -> bool:
    """Add the redacting processor to an SDK TracerProvider once; False if it is not one."""
    if not hasattr(provider, "add_span_processor"):
        return False
    existing = getattr(provider, "_apiusage_redactor", None)
    if existing is not None:
        # A later caller may know more sensitive header names (e.g. a custom consumer header).
        existing.scrubber = Scrubber(
            set(existing.scrubber.sensitive_headers) | {normalise_header(h) for h in sensitive_headers}
        )
        return True
    processor = RedactingSpanProcessor(sensitive_headers)
    provider.add_span_processor(processor)
    provider._apiusage_redactor = processor
    return True
