"""The ASGI middleware that enriches the server span and adds deprecation headers.

It must run *inside* the OpenTelemetry middleware, where the server span is current,
and *after* routing has filled the scope, so it does its work when the response
starts (or, if the app raised, when the request unwinds).
"""

from __future__ import annotations

import logging
import os
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
from ._design import CURRENT, Design, Exchange, validation_errors
from ._enrich import Enricher

_logger = logging.getLogger("apiusage.instrumentation")


class ApiUsageMiddleware:
    """Pure ASGI middleware; add it with :func:`apiusage.instrumentation.instrument`."""

    def __init__(self, app: Any, enricher: Enricher, provider_ready: bool = False) -> None:
        self.app = app
        self.enricher = enricher
        self.design = Design(enricher.settings)
        # instrument() passes True when it already set up redaction on the app's provider.
        self._redaction_checked = provider_ready
        self._lock = threading.Lock()
        self._warned = False
        self._validation_error: type | None = None
        if self.design.validation:
            self._validation_error = _hook_validation_errors(app, self.design.max_errors)

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
        design = self.design
        exchange = Exchange(scope, self.enricher)
        token = CURRENT.set(exchange)

        app_receive = receive
        if design.wrap_receive:
            if design.body_depth > 0 and design.json_body_wanted(exchange.headers):
                exchange.buffer = bytearray()
            limit = design.max_body

            async def app_receive() -> dict[str, Any]:
                # Counts and (for a JSON body within the bound) keeps what the app reads;
                # the app gets each message exactly as the server sent it.
                message = await receive()
                if message["type"] == "http.request":
                    body = message.get("body")
                    if body:
                        exchange.received += len(body)
                        buffer = exchange.buffer
                        if buffer is not None:
                            if len(buffer) + len(body) > limit:
                                exchange.buffer = None  # too large: no names, nothing kept
                            else:
                                buffer += body
                    if not message.get("more_body", False):
                        exchange.complete = True
                elif message["type"] == "http.disconnect" and not exchange.complete:
                    exchange.disconnected = True
                return message

        async def send_with_headers(message: dict[str, Any]) -> None:
            nonlocal done
            kind = message["type"]
            if kind == "http.response.body":
                if exchange.sent >= 0:
                    body = message.get("body")
                    if body:
                        exchange.sent += len(body)
                    # OpenTelemetry ends the span when the last body message passes its
                    # send: the attributes must be on it before.
                    if not message.get("more_body", False) and not exchange.finished:
                        self._complete(exchange, span, None)
            elif not done and kind == "http.response.start":
                done = True
                exchange.status = message.get("status") or 0
                exchange.sent = 0
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
            elif kind == "http.response.pathsend" and exchange.sent >= 0 and not exchange.finished:
                exchange.sent = _file_size(message.get("path"))
                self._complete(exchange, span, None)
            await send(message)

        try:
            await self.app(scope, app_receive, send_with_headers)
        except Exception as exc:
            if not exchange.finished:
                self._complete(exchange, span, exc)
            raise
        finally:
            CURRENT.reset(token)
            if not done:
                self._finish(scope, span)
            if not exchange.finished:
                self._complete(exchange, span, None)

    def _complete(self, exchange: Exchange, span: trace.Span, error: BaseException | None) -> None:
        """Put the schema version 2 attributes on the span (once per request)."""
        exchange.finished = True
        try:
            if error is not None and exchange.validation is None and self._validation_error is not None:
                if isinstance(error, self._validation_error):  # raised with no handler for it
                    errors = error.errors()  # type: ignore[attr-defined]
                    exchange.validation = validation_errors(errors[: self.design.max_errors + 1])
            container: Any = getattr(span, "_attributes", None)
            store: Any = getattr(container, "_dict", None)
            if type(store) is not dict:
                store = None
            if store is not None:
                if container._immutable:
                    return
            elif not span.is_recording():
                return
            existing = store if store is not None else (getattr(span, "attributes", None) or {})
            attributes = exchange.attributes(self.design, existing, error)
            if not attributes:
                return
            if (
                store is not None
                and container.max_value_len is None
                and (container.maxlen is None or len(store) + len(attributes) <= container.maxlen)
            ):
                # Plain str, int and tuple-of-str values: what the SDK would store after
                # validating them (see Enricher.on_response).
                with container._lock:
                    store.update(attributes)
            else:
                span.set_attributes(attributes)
        except Exception:
            self._failed()

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


def _file_size(path: Any) -> int:
    try:
        return os.path.getsize(path)
    except (OSError, TypeError, ValueError):
        return 0


def _hook_validation_errors(app: Any, cap: int) -> type | None:
    """Make the app's handler of RequestValidationError note each error on the request.

    FastAPI turns the exception into a 422 inside the app (ExceptionMiddleware, below us),
    with its own handler or the app's: we wrap whichever handles it, so the response is
    the same and the errors are seen either way. Returns the exception class.
    """
    try:
        from fastapi.exceptions import RequestValidationError
        from starlette._utils import is_async_callable
        from starlette.middleware.exceptions import ExceptionMiddleware
    except ImportError:  # pragma: no cover - FastAPI is a dependency
        return None
    node = app
    for _ in range(64):  # the middleware chain: each one's inner app is .app
        if isinstance(node, ExceptionMiddleware):
            break
        node = getattr(node, "app", None)
        if node is None:
            return RequestValidationError
    else:
        return RequestValidationError
    handlers = getattr(node, "_exception_handlers", None)
    if not isinstance(handlers, dict):
        return RequestValidationError
    original = None
    for cls in RequestValidationError.__mro__:  # as Starlette looks a handler up
        if cls in handlers:
            original = handlers[cls]
            break
    if original is None or getattr(original, "_apiusage_original", None) is not None:
        return RequestValidationError

    def note(exc: Any) -> None:
        exchange = CURRENT.get()
        if exchange is None:
            return
        try:
            exchange.validation = validation_errors(exc.errors()[: cap + 1])
        except Exception:
            _logger.debug("apiusage: could not read the validation errors", exc_info=True)

    handler: Any
    if is_async_callable(original):

        async def handler(request: Any, exc: Any) -> Any:
            note(exc)
            return await original(request, exc)

    else:

        def handler(request: Any, exc: Any) -> Any:
            note(exc)
            return original(request, exc)

    handler._apiusage_original = original
    handlers[RequestValidationError] = handler
    return RequestValidationError


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
