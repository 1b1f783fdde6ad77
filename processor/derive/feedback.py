"""Developer feedback events, as the sinks see them (from OTLP log records named apiusage.feedback).

The receivers find the log records that may be feedback (passthrough.py reads them off the wire:
only records holding the bytes `apiusage.feedback` are ever decoded) as `EventRecord`s;
`extract_feedback` keeps those that are feedback events and turns them into `Feedback` tuples
whose label values are already printable and bounded, as the Deriver's are for spans."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from apiusage.conventions.attributes import (
    ATTR_CONSUMER_ID,
    ATTR_FEEDBACK_CATEGORY,
    ATTR_FEEDBACK_ROUTE,
    ATTR_FEEDBACK_SCORE,
    EVENT_FEEDBACK,
)

from .requests import consumer_key
from .series import sanitize_label_value

__all__ = [
    "EVENT_NAME_ATTRIBUTE",
    "EventRecord",
    "Feedback",
    "extract_feedback",
    "feedback_keys",
    "is_feedback",
]

#: Where SDKs older than the OTLP `event_name` field put an event's name: a log record attribute.
EVENT_NAME_ATTRIBUTE = "event.name"
_SCORES: dict[object, str] = {n: str(n) for n in range(1, 6)}
_SCORES.update({str(n): str(n) for n in range(1, 6)})


class Feedback(NamedTuple):
    """One feedback event: what a developer told the API, through the service's own endpoint."""

    service: str
    route: str  # the route template it is about, or "" when about none
    category: str
    score: str  # "1".."5"
    consumer_id: str | None  # stored id (derive.requests.consumer_key), never a label
    time_ns: int


class EventRecord(NamedTuple):
    """A log record as read from an OTLP logs request, before it is known to be feedback.

    `attributes` holds only the keys `feedback_keys` names (the first of a repeated key), with
    their values as str, int, float or bool (None: a value of another type)."""

    service: str | None  # the resource's service.name
    event_name: str
    attributes: Mapping[str, object]
    time_unix_nano: int
    observed_time_unix_nano: int


def feedback_keys(consumer_attributes: Sequence[str] = (ATTR_CONSUMER_ID,)) -> frozenset[str]:
    """The attribute keys a feedback record is read for."""
    return frozenset(
        (EVENT_NAME_ATTRIBUTE, ATTR_FEEDBACK_SCORE, ATTR_FEEDBACK_CATEGORY, ATTR_FEEDBACK_ROUTE)
    ) | frozenset(consumer_attributes)


def _score(value: object) -> str | None:
    """ "1".."5" from an int, a double of an integer or a string of one; None for anything else."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value.__class__ is not int and value.__class__ is not str:  # True == 1 is no score
        return None
    return _SCORES.get(value)


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_feedback(record: EventRecord) -> bool:
    """Named apiusage.feedback by the OTLP event_name field or, when that is empty, the attribute."""
    name = record.event_name or record.attributes.get(EVENT_NAME_ATTRIBUTE)
    return name == EVENT_FEEDBACK


def extract_feedback(
    records: Iterable[EventRecord],
    max_label_length: int = 128,
    consumer_attributes: Sequence[str] = (ATTR_CONSUMER_ID,),
    now_ns: int | None = None,
) -> tuple[list[Feedback], int]:
    """The feedback events among `records`, and how many feedback records were refused for a score
    that is not an integer 1..5 (DataQualityCheck.INVALID_FEEDBACK_SCORE); never raises for a value.

    Records of other events are not feedback and are left alone. A record without a category is
    counted under "unknown", as spans without a client are; one without a service.name under
    "unknown_service". The time is time_unix_nano, else observed_time_unix_nano, else `now_ns`."""
    out: list[Feedback] = []
    refused = 0
    now = time.time_ns() if now_ns is None else now_ns
    for r in records:
        if not is_feedback(r):
            continue
        attributes = r.attributes
        score = _score(attributes.get(ATTR_FEEDBACK_SCORE))
        if score is None:
            refused += 1
            continue
        service = r.service if r.service else "unknown_service"
        category = attributes.get(ATTR_FEEDBACK_CATEGORY)
        category = "unknown" if category is None or category == "" else _text(category)
        route = attributes.get(ATTR_FEEDBACK_ROUTE)
        route = "" if route is None else _text(route)
        consumer: str | None = None
        for key in consumer_attributes:
            value = attributes.get(key)
            if value is not None and value != "":
                consumer = consumer_key(_text(value))
                break
        out.append(
            Feedback(
                sanitize_label_value(service, max_label_length),
                sanitize_label_value(route, max_label_length),
                sanitize_label_value(category, max_label_length),
                score,
                consumer,
                r.time_unix_nano or r.observed_time_unix_nano or now,
            )
        )
    return out, refused
