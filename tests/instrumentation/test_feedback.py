"""record_feedback(): an OpenTelemetry event (log record apiusage.feedback) through the real SDK."""

from __future__ import annotations

import logging

import pytest
from apiusage.conventions.attributes import (
    ATTR_CONSUMER_ID,
    ATTR_FEEDBACK_CATEGORY,
    ATTR_FEEDBACK_ROUTE,
    ATTR_FEEDBACK_SCORE,
    EVENT_FEEDBACK,
)
from apiusage.instrumentation import FeedbackError, InstrumentationError, instrument, record_feedback
from design_app import build_app
from instr_support import KEY, pseudonym

API_KEY = "sk_live_FEEDBACKKEY"


def records(logs) -> list:
    return [r.log_record for r in logs.get_finished_logs()]


def test_feedback_inside_a_request_carries_the_requests_consumer_id(spans, client_for, logs):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    response = client_for(app).post(
        "/v1/feedback",
        json={"score": 4, "category": "docs", "route": "/v1/orders"},
        headers={"X-API-Key": API_KEY},
    )
    assert response.status_code == 200
    (record,) = records(logs)
    assert record.event_name == EVENT_FEEDBACK == "apiusage.feedback"
    assert dict(record.attributes) == {
        ATTR_FEEDBACK_SCORE: 4,
        ATTR_FEEDBACK_CATEGORY: "docs",
        ATTR_FEEDBACK_ROUTE: "/v1/orders",
        ATTR_CONSUMER_ID: pseudonym(API_KEY),
    }
    server = spans.one_server()
    # The same pseudonym as the span's, and the event belongs to the request's trace.
    assert server.attributes[ATTR_CONSUMER_ID] == pseudonym(API_KEY)
    assert record.trace_id == server.context.trace_id
    assert record.timestamp > 0


@pytest.mark.parametrize("path", ["/v1/feedback", "/v1/feedback-sync"], ids=["async", "sync-endpoint"])
def test_consumer_from_request_state_set_by_the_apps_auth(spans, client_for, logs, path):
    """The consumer is resolved when record_feedback() runs: after the app's dependencies."""
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, consumer="state", environ={})
    client_for(app).post(
        path, json={"score": 1, "category": "errors"}, headers={"Authorization": "Bearer 42"}
    )
    (record,) = records(logs)
    assert dict(record.attributes) == {
        ATTR_FEEDBACK_SCORE: 1,
        ATTR_FEEDBACK_CATEGORY: "errors",
        ATTR_CONSUMER_ID: pseudonym("acct-42"),
    }


def test_unknown_caller_has_no_consumer_id(spans, client_for, logs):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    client_for(app).post("/v1/feedback", json={"score": 5, "category": "performance"})
    (record,) = records(logs)
    assert dict(record.attributes) == {ATTR_FEEDBACK_SCORE: 5, ATTR_FEEDBACK_CATEGORY: "performance"}


def test_outside_a_request_no_consumer_id(logs):
    record_feedback(3, "docs")
    record_feedback(2, " docs ", route="/v1/orders/{order_id}")
    first, second = records(logs)
    assert dict(first.attributes) == {ATTR_FEEDBACK_SCORE: 3, ATTR_FEEDBACK_CATEGORY: "docs"}
    assert dict(second.attributes) == {
        ATTR_FEEDBACK_SCORE: 2,
        ATTR_FEEDBACK_CATEGORY: "docs",
        ATTR_FEEDBACK_ROUTE: "/v1/orders/{order_id}",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"score": 0, "category": "docs"}, "record_feedback(score=0): expected an integer from 1 to 5"),
        ({"score": 6, "category": "docs"}, "record_feedback(score=6)"),
        ({"score": True, "category": "docs"}, "record_feedback(score=True)"),
        ({"score": 3.0, "category": "docs"}, "record_feedback(score=3.0)"),
        ({"score": "3", "category": "docs"}, "record_feedback(score='3')"),
        ({"score": 3, "category": ""}, "record_feedback(category=''): expected 1 to 64 printable characters"),
        (
            {"score": 3, "category": "x" * 65},
            "record_feedback(category='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...",
        ),
        ({"score": 3, "category": "a\nb"}, "record_feedback(category='a\\nb'): expected 1 to 64"),
        ({"score": 3, "category": 7}, "record_feedback(category=7): expected a string"),
        (
            {"score": 3, "category": "docs", "route": "/a\x00"},
            "record_feedback(route='/a\\x00'): expected 1 to 256",
        ),
        ({"score": 3, "category": "docs", "route": ""}, "record_feedback(route='')"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(logs, kwargs, message):
    with pytest.raises(FeedbackError) as info:
        record_feedback(**kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InstrumentationError)
    assert records(logs) == []  # nothing half-emitted


def test_no_logger_provider_warns_once(caplog, monkeypatch):
    from apiusage.instrumentation import _feedback
    from opentelemetry import _logs

    proxy = _logs._internal.ProxyLoggerProvider()
    monkeypatch.setattr(_logs, "get_logger_provider", lambda: proxy)
    monkeypatch.setattr(_feedback, "_state", {})
    with caplog.at_level(logging.WARNING, logger="apiusage.instrumentation"):
        record_feedback(3, "docs")
        record_feedback(3, "docs")
    warnings = [r for r in caplog.records if "no OpenTelemetry LoggerProvider" in r.getMessage()]
    assert len(warnings) == 1
    assert "OTEL_LOGS_EXPORTER=otlp" in warnings[0].getMessage()
