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
is possible; if a future SDK changes that, the failure is logged once, never raised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from ._sdk import edit_frozen

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
    """Decides what leaves: used by the span processor, and testable on plain dicts."""

    def __init__(self, sensitive_headers: Iterable[str] = ()) -> None:
        self.sensitive_headers = frozenset(normalise_header(h) for h in sensitive_headers)

    def _header_is_sensitive(self, key: str) -> bool:
        name = key.split(".header.", 1)[1]
        return name in self.sensitive_headers or bool(_SENSITIVE_HEADER.search(name))

    def changes(
        self, attributes: Mapping[str, Any], server: bool
    ) -> tuple[list[str], dict[str, str]]:
        """(keys to delete, keys to rewrite) for one span's attributes."""
        drop: list[str] = []
        rewrite: dict[str, str] = {}
        candidates = _SERVER_CANDIDATES if server else _CANDIDATES
        keys = getattr(attributes, "_dict", attributes).keys()
        # Runs at every span end: a C-level set intersection, and a prefix test per key.
        for key in keys & candidates:
            if key in URL_KEYS:
                value = attributes[key]
                if isinstance(value, str) and ("?" in value or "#" in value):
                    rewrite[key] = value.split("?", 1)[0].split("#", 1)[0]
            else:
                drop.append(key)
        # Captured headers are rare: one C-level substring search rules them out.
        if ".header." in "\n".join(keys):
            for key in keys:
                if (key.startswith(HEADER_PREFIXES) and key not in candidates
                        and self._header_is_sensitive(key)):
                    drop.append(key)
        return drop, rewrite

    def scrub(self, attributes: Mapping[str, Any], server: bool) -> dict[str, Any]:
        """A cleaned copy of ``attributes``."""
        drop, rewrite = self.changes(attributes, server)
        cleaned = {k: v for k, v in attributes.items() if k not in drop}
        cleaned.update(rewrite)
        return cleaned


class RedactingSpanProcessor(SpanProcessor):
    """Removes query strings, credentials and client addresses before any export."""

    def __init__(self, sensitive_headers: Iterable[str] = ()) -> None:
        self.scrubber = Scrubber(sensitive_headers)
        self._warned = False

    def _on_ending(self, span: Span) -> None:
        # INTERNAL spans (such as the ASGI send/receive spans) carry no request data;
        # skipping them keeps the per-request cost down. (Identity test: hashing an Enum
        # member runs Python code.)
        if span.kind is _INTERNAL:
            return
        attributes = getattr(span, "_attributes", None)
        if not attributes:
            return
        try:
            drop, rewrite = self.scrubber.changes(attributes, span.kind == SpanKind.SERVER)
            if drop or rewrite:
                edit_frozen(attributes, drop, rewrite)
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
