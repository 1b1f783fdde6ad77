"""Feature-flag evaluations and experiment exposures, as the sinks see them.

An evaluation reaches the processor two ways (OpenTelemetry's feature-flag conventions, as
OpenFeature's OpenTelemetry hook emits them): a span event on the request's span (the scanner
returns it with the span, and the Deriver puts it in ``ApiRequest.flags``), or an OTLP log
record named ``feature_flag.evaluation`` carrying the request's trace and span ids
(``FlagEvaluation``; joined to its request by span id). An evaluation of a flag that
``experiments.yaml`` declares, on a request in the experiment's segment, makes one
``Exposure``: what the experiment sinks count.

The evaluation's targeting key (``feature_flag.context.id``) is never read: it may be a raw
user id. The consumer is the request's pseudonymous consumer id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from apiusage.conventions.attributes import (
    EVENT_FEATURE_FLAG,
    EVENT_FEATURE_FLAG_EVALUATION,
    FEATURE_FLAG_KEY,
    FEATURE_FLAG_RESULT_VALUE,
    FEATURE_FLAG_VARIANT,
    FEATURE_FLAG_VARIANT_OLD,
)

from .series import sanitize_label_value

__all__ = [
    "EVALUATION_EVENT_NAMES",
    "EVALUATION_KEYS",
    "EVALUATION_RECORD_KEYS",
    "EvaluationRecord",
    "Exposure",
    "FlagEvaluation",
    "extract_evaluations",
    "flag_variant",
    "is_evaluation",
]

#: Span event and log event names that are feature-flag evaluations.
EVALUATION_EVENT_NAMES = (EVENT_FEATURE_FLAG_EVALUATION, EVENT_FEATURE_FLAG)
#: The attribute keys an evaluation is read for, in the order the scanner returns them.
EVALUATION_KEYS = (
    FEATURE_FLAG_KEY,
    FEATURE_FLAG_VARIANT,
    FEATURE_FLAG_VARIANT_OLD,
    FEATURE_FLAG_RESULT_VALUE,
)
#: A variant read from the value's JSON is kept only when this short (an object is no variant).
MAX_VALUE_VARIANT_LENGTH = 64


def flag_variant(attributes: Mapping[str, object]) -> str | None:
    """The variant of an evaluation: feature_flag.result.variant, else feature_flag.variant, else
    the result value's JSON when it is a short scalar (``true``, ``"blue"`` -> ``blue``); None if
    none of them is a non-empty string (then the evaluation is refused and counted)."""
    for key in (FEATURE_FLAG_VARIANT, FEATURE_FLAG_VARIANT_OLD):
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    value = attributes.get(FEATURE_FLAG_RESULT_VALUE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str) or not value or len(value) > MAX_VALUE_VARIANT_LENGTH:
        return None
    if value[0] in "{[":
        return None
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    return value or None


class FlagEvaluation(NamedTuple):
    """A feature-flag evaluation from an OTLP log record, before it is joined to its request."""

    service: str  # the resource's service.name (sanitised; "unknown_service" when absent)
    flag: str  # feature_flag.key, sanitised
    variant: str  # flag_variant(), sanitised
    trace_id: bytes  # 16 bytes, or b"" when the record carries none (then it cannot be joined)
    span_id: bytes  # 8 bytes, or b""
    time_ns: int


class Exposure(NamedTuple):
    """One request of an experiment's segment, under the variant its flag evaluation returned."""

    service: str
    experiment: str  # the experiment's name in experiments.yaml
    variant: str  # one of the experiment's declared variants
    method: str
    route: str
    status_code: str  # as ApiRequest.status_code
    plan_tier: str
    client_name: str
    feature: str | None
    consumer_id: str | None  # stored id (derive.requests.consumer_key), never a label
    duration: float  # seconds
    weight: float  # adjusted count, as ApiRequest.weight
    end_time_ns: int


#: Where SDKs older than the OTLP `event_name` field put an event's name (as derive.feedback reads it).
_EVENT_NAME_ATTRIBUTE = "event.name"
#: The attribute keys an evaluation log record is read for: EVALUATION_KEYS and the event's name.
#: The targeting key (feature_flag.context.id) is not among them, so it is never decoded.
EVALUATION_RECORD_KEYS = frozenset((*EVALUATION_KEYS, _EVENT_NAME_ATTRIBUTE))
_TRACE_ID_LENGTH, _SPAN_ID_LENGTH = 16, 8


class EvaluationRecord(NamedTuple):
    """A log record as read from an OTLP logs request, before it is known to be an evaluation.

    `attributes` holds only EVALUATION_RECORD_KEYS (the first of a repeated key), with their values
    as str, int, float or bool (None: a value of another type); the ids are as the record gave them."""

    service: str | None  # the resource's service.name
    event_name: str
    attributes: Mapping[str, object]
    time_unix_nano: int
    observed_time_unix_nano: int
    trace_id: bytes
    span_id: bytes


def is_evaluation(record: EvaluationRecord) -> bool:
    """Named feature_flag.evaluation by the OTLP event_name field or, when that is empty, the attribute."""
    name = record.event_name or record.attributes.get(_EVENT_NAME_ATTRIBUTE)
    return name == EVENT_FEATURE_FLAG_EVALUATION


def _id(value: bytes, length: int) -> bytes:
    """The id when it is one (`length` bytes, not all zeros: an SDK's "no span"); b"" otherwise."""
    return value if len(value) == length and value.count(0) != length else b""


def extract_evaluations(
    records: Iterable[EvaluationRecord], max_label_length: int = 128, now_ns: int | None = None
) -> tuple[list[FlagEvaluation], int]:
    """The feature-flag evaluations among `records`, and how many evaluation records were refused
    for a missing key or variant (DataQualityCheck.INVALID_FLAG_EVALUATION); never raises for a value.

    Records of other events are left alone. The key must be a non-empty string; the variant is
    flag_variant()'s. A record without a service.name is counted under "unknown_service"; ids that
    are not 16 and 8 bytes become b"" (the evaluation cannot be joined to a request, but is kept).
    The time is time_unix_nano, else observed_time_unix_nano, else `now_ns`."""
    out: list[FlagEvaluation] = []
    refused = 0
    now = time.time_ns() if now_ns is None else now_ns
    for r in records:
        if not is_evaluation(r):
            continue
        flag = r.attributes.get(FEATURE_FLAG_KEY)
        variant = flag_variant(r.attributes)
        if not isinstance(flag, str) or not flag or variant is None:
            refused += 1
            continue
        out.append(
            FlagEvaluation(
                sanitize_label_value(r.service or "unknown_service", max_label_length),
                sanitize_label_value(flag, max_label_length),
                sanitize_label_value(variant, max_label_length),
                _id(r.trace_id, _TRACE_ID_LENGTH),
                _id(r.span_id, _SPAN_ID_LENGTH),
                r.time_unix_nano or r.observed_time_unix_nano or now,
            )
        )
    return out, refused
