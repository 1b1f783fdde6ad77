"""The ASGI middleware that enriches the server span and adds deprecation headers.

It must run *inside* the OpenTelemetry middleware, where the server span is current,
and *after* routing has filled the scope, so it does its work when the response
starts (or, if the app raised, when the request unwinds).
"""

from __future__ import annotations

import logging
import threading
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as _otel_context
from opentelemetry import trace

try:  # the key OpenTelemetry stores the current span under (private, stable since 1.0)
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # pragma: no cover - then the public API is used
    _SPAN_KEY = None  # type: ignore[assignment]

from . import _redact
from ._enrich import Enricher

_logger = logging.getLogger("apiusage.instrumentation")


class ApiUsageMiddleware:
    """Pure ASGI middleware; add it with :func:`apiusage.instrumentation.instrument`."""

    def __init__(self, app: Any, enricher: Enricher, provider_ready: bool = False) -> None:
        self.app = app
        self.enricher = enricher
        # instrument() passes True when it already set up redaction on the app's provider.
        self._redaction_checked = provider_ready
        self._lock = threading.Lock()
        self._warned = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self._redaction_checked:
            self._ensure_redaction()
        # _current_span(), inlined: this runs on every request.
        span = _SPAN_VAR.get().get(_SPAN_KEY) if _SPAN_VAR is not None else None
        if span is None or (type(span) not in _SPAN_TYPES and not _is_span(span)):
            span = trace.get_current_span()
        done = False

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal done
            if not done and message["type"] == "http.response.start":
                done = True
                try:
                    extra = self.enricher.on_response(scope, span, self.app)
                except Exception:
                    extra = self._failed()
                if extra:
                    headers = message.get("headers") or ()
                    present = {name.lower() for name, _ in headers}
                    if b"deprecation" in present or b"sunset" in present:
                        # The app's own Deprecation/Sunset headers win over ours.
                        extra = [h for h in extra if h[0] == b"link" or h[0] not in present]
                    message = {**message, "headers": [*headers, *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if not done:
                self._finish(scope, span)

    def _finish(self, scope: dict[str, Any], span: trace.Span) -> list[tuple[bytes, bytes]]:
        try:
            return self.enricher.on_response(scope, span, self.app)
        except Exception:
            return self._failed()

    def _failed(self) -> list[tuple[bytes, bytes]]:
        # Telemetry must never fail the host's request.
        if not self._warned:
            self._warned = True
            _logger.warning("apiusage: enrichment failed; the request is unaffected", exc_info=True)
        return []

    def _ensure_redaction(self) -> None:
        # The app may have set its own tracer provider after we were installed (e.g. at
        # import time under opentelemetry-instrument): make sure it scrubs too.
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider):
            return  # not configured yet (so nothing is exported); look again next request
        with self._lock:
            if self._redaction_checked:
                return
            if not _redact.install(provider, self.enricher.sensitive_headers):
                _logger.warning(
                    "apiusage: the tracer provider %s is not the OpenTelemetry SDK's; "
                    "span attributes cannot be scrubbed of query strings and client addresses",
                    type(provider).__name__,
                )
            self.enricher.set_service_name(_service_name_of(provider))
            self._redaction_checked = True


def _span_var() -> ContextVar[Any] | None:
    """The context variable of OpenTelemetry's default (contextvars) runtime context."""
    var = getattr(getattr(_otel_context, "_RUNTIME_CONTEXT", None), "_current_context", None)
    return var if type(var) is ContextVar and _SPAN_KEY is not None else None


_SPAN_VAR = _span_var()


def _current_span() -> trace.Span:
    """``trace.get_current_span()``, with one Python call instead of four (inlined in __call__).

    The public function goes through three layers of the context API to read one
    context variable; this reads that variable directly, and uses the public function
    for anything else: another runtime context, no span, or something that is not a Span.
    """
    span = _SPAN_VAR.get().get(_SPAN_KEY) if _SPAN_VAR is not None else None
    if span is None or (type(span) not in _SPAN_TYPES and not _is_span(span)):
        span = trace.get_current_span()
    return span


# Classes known to be trace.Span subclasses: isinstance() against an ABC runs Python code
# (ABCMeta.__instancecheck__), and the answer for a class never changes from yes to no.
_SPAN_TYPES: set[type] = set()


def _is_span(value: Any) -> bool:
    if not isinstance(value, trace.Span):
        return False
    if len(_SPAN_TYPES) < 16:
        _SPAN_TYPES.add(type(value))
    return True


def _service_name_of(provider: Any) -> str | None:
    resource = getattr(provider, "resource", None)
    name = getattr(resource, "attributes", {}).get("service.name")
    return str(name) if name else None


def has_middleware(app: Any) -> bool:
    """Whether ``app`` already carries our middleware (added by instrument())."""
    return any(getattr(m, "cls", None) is ApiUsageMiddleware for m in getattr(app, "user_middleware", ()))


_patch_lock = threading.Lock()
_patched: dict[str, Any] = {}


def patch_fastapi(enricher: Enricher) -> None:
    """Insert the middleware into every FastAPI app built from now on (zero-code path).

    We wrap ``FastAPI.build_middleware_stack`` on the class: the OpenTelemetry FastAPI
    instrumentation captures each app's ``build_middleware_stack`` when the app is
    created and wraps its *result*, so our middleware ends up inside the OpenTelemetry
    middleware whichever instrumentor loads first. Apps that already have our
    middleware from ``instrument()`` are left alone.
    """
    from fastapi.applications import FastAPI
    from starlette.middleware.errors import ServerErrorMiddleware

    with _patch_lock:
        _patched["enricher"] = enricher
        if "original" in _patched:
            return
        original = FastAPI.build_middleware_stack
        _patched["original"] = original

        def build_middleware_stack(self: Any) -> Any:
            stack = original(self)
            current = _patched.get("enricher")
            if current is None or has_middleware(self):
                return stack
            if isinstance(stack, ServerErrorMiddleware):
                stack.app = ApiUsageMiddleware(stack.app, current)  # type: ignore[assignment]
                return stack
            return ApiUsageMiddleware(stack, current)

        build_middleware_stack.__wrapped__ = original  # type: ignore[attr-defined]
        FastAPI.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def unpatch_fastapi() -> None:
    from fastapi.applications import FastAPI

    with _patch_lock:
        original = _patched.pop("original", None)
        _patched.pop("enricher", None)
        if original is not None:
            FastAPI.build_middleware_stack = original  # type: ignore[method-assign]
