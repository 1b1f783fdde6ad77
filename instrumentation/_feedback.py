"""``record_feedback()``: a developer's feedback as an OpenTelemetry event.

The event is a log record with event name ``apiusage.feedback`` emitted through the
global LoggerProvider, so it is exported only when the service exports logs
(``OTEL_LOGS_EXPORTER=otlp`` under ``opentelemetry-instrument``; see docs/instrumentation.md).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from apiusage.conventions.attributes import (
    ATTR_CONSUMER_ID,
    ATTR_FEEDBACK_CATEGORY,
    ATTR_FEEDBACK_ROUTE,
    ATTR_FEEDBACK_SCORE,
    EVENT_FEEDBACK,
)
from opentelemetry import _logs

from ._design import CURRENT, INVALID
from ._errors import InstrumentationError

_logger = logging.getLogger("apiusage.instrumentation")

MAX_CATEGORY_LENGTH = 64
MAX_ROUTE_LENGTH = 256
_state: dict[str, Any] = {}
_lock = threading.Lock()


class FeedbackError(InstrumentationError, ValueError):
    """A record_feedback() argument out of range; the message names the argument."""


def record_feedback(score: int, category: str, route: str | None = None) -> None:
    """Emit one feedback event: ``score`` 1..5, a short ``category``, optionally the route it is about.

    Called inside a request (the service's own feedback endpoint), the event carries the
    caller's pseudonymous consumer id, the same one the request's span gets; outside a
    request, none. Raises FeedbackError (a ValueError) naming the bad argument.
    """
    if type(score) is not int or not 1 <= score <= 5:
        raise FeedbackError(
            f"apiusage: record_feedback(score={_show(score)}): expected an integer from 1 to 5"
        )
    category = _label("category", category, MAX_CATEGORY_LENGTH)
    attributes: dict[str, Any] = {ATTR_FEEDBACK_SCORE: score, ATTR_FEEDBACK_CATEGORY: category}
    exchange = CURRENT.get()
    if route is not None:
        route = _label("route", route, MAX_ROUTE_LENGTH)
        attributes[ATTR_FEEDBACK_ROUTE] = route if exchange is None else _template(exchange, route)
    if exchange is not None:
        try:
            consumer = exchange.enricher.consumer_id(exchange.scope)
        except Exception:  # a resolver's bug is logged by the enricher; the event still goes out
            consumer = None
        if consumer:
            attributes[ATTR_CONSUMER_ID] = consumer
    fields: dict[str, Any] = {
        "timestamp": time.time_ns(),
        "severity_number": _logs.SeverityNumber.INFO,
        "event_name": EVENT_FEEDBACK,
        "attributes": attributes,
    }
    logger = _otel_logger()
    try:
        logger.emit(**fields)
    except TypeError:  # an API before Logger.emit took keywords (1.40): a LogRecord
        logger.emit(_logs.LogRecord(**fields))


def _template(exchange: Any, route: str) -> str:
    """The app's route template ``route`` names: itself, the template a raw path matches
    (``/v1/orders/42`` -> ``/v1/orders/{order_id}``), else INVALID.

    The route is often the client's own text (a feedback form's field): only a route of
    this app may become a label value, never an id in a raw path or arbitrary text.
    """
    try:
        table = exchange.enricher.table(exchange.app)
        if route in table.route_templates():
            return route
        template = table.template({"type": "http", "path": route, "root_path": "", "method": "GET"})
    except Exception:  # an exotic app: what the service passed, as before
        _logger.debug("apiusage: record_feedback(): could not look the route up", exc_info=True)
        return route
    if template is None:
        if not _state.get("warned_route"):
            _state["warned_route"] = True
            _logger.warning(
                "apiusage: record_feedback(route=%s): not a route of this app; recorded as %s",
                _show(route),
                INVALID,
            )
        return INVALID
    return template


def _label(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise FeedbackError(f"apiusage: record_feedback({name}={_show(value)}): expected a string")
    text = value.strip()
    if not text or len(text) > limit or not text.isprintable():
        raise FeedbackError(
            f"apiusage: record_feedback({name}={_show(value)}): expected 1 to {limit} printable characters"
        )
    return text


def _show(value: Any) -> str:
    # A 10 MB category is shown by its start: repr() of all of it only to cut it is waste.
    text = repr(value[:41] if isinstance(value, (str, bytes)) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _otel_logger() -> Any:
    provider = _logs.get_logger_provider()
    cached = _state.get("logger")
    if cached is not None and _state.get("provider") is provider:
        return cached
    with _lock:
        logger = _logs.get_logger("apiusage.instrumentation")
        _state["logger"], _state["provider"] = logger, provider
        if type(provider).__name__ in ("ProxyLoggerProvider", "NoOpLoggerProvider") and not _state.get(
            "warned"
        ):
            _state["warned"] = True
            _logger.warning(
                "apiusage: record_feedback(): no OpenTelemetry LoggerProvider is configured, so "
                "feedback events are not exported; set OTEL_LOGS_EXPORTER=otlp (opentelemetry-instrument) "
                "or set a LoggerProvider with an OTLP log exporter"
            )
    return logger
