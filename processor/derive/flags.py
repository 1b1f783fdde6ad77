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

from collections.abc import Mapping
from typing import NamedTuple

from apiusage.conventions.attributes import (
    EVENT_FEATURE_FLAG,
    EVENT_FEATURE_FLAG_EVALUATION,
    FEATURE_FLAG_KEY,
    FEATURE_FLAG_RESULT_VALUE,
    FEATURE_FLAG_VARIANT,
    FEATURE_FLAG_VARIANT_OLD,
)

__all__ = [
    "EVALUATION_EVENT_NAMES",
    "EVALUATION_KEYS",
    "Exposure",
    "FlagEvaluation",
    "flag_variant",
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
