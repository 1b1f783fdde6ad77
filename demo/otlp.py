"""OTLP trace and log requests built from plain Python values (for the demo backfill, tests, benchmarks).

One encoding of span attributes: bool, int, float, str, bytes, a list or tuple (an array) and a
mapping (a key-value list) become the matching AnyValue; `None` leaves an attribute out (or,
given to `set_value` directly, leaves the AnyValue empty). `design_attributes` writes the
schema version 2 attributes of a request (parameter and field names as string arrays, body
sizes, validation errors, the client's region, `error.type`) under their contract names;
`feedback_request` builds the OTLP logs request of developer feedback events. Needs
opentelemetry-proto (the `processor` extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from apiusage.conventions import attributes as attr
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ScopeLogs, SeverityNumber
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

if TYPE_CHECKING:  # the type of a message's repeated field; internal, so not imported at run time
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

__all__ = [
    "SERVER",
    "AnyValue",
    "ExportLogsServiceRequest",
    "ExportTraceServiceRequest",
    "KeyValue",
    "LogRecord",
    "ScopeLogs",
    "ScopeSpans",
    "Span",
    "add_attributes",
    "add_feedback",
    "add_log_resource",
    "add_resource",
    "add_span",
    "design_attributes",
    "feedback_request",
    "key_value",
    "set_value",
    "spans_request",
]

SERVER = Span.SPAN_KIND_SERVER


def set_value(target: AnyValue, value: object) -> None:
    """Write `value` into `target` as the AnyValue of its type; TypeError naming an unknown type."""
    if value is None:
        return
    if isinstance(value, bool):  # before int: bool is an int
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes | bytearray):
        target.bytes_value = bytes(value)
    elif isinstance(value, list | tuple):
        array = target.array_value
        array.SetInParent()  # an empty list is still an array
        for item in value:
            set_value(array.values.add(), item)
    elif isinstance(value, Mapping):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        add_attributes(kvlist.values, value)
    else:
        raise TypeError(f"no OTLP AnyValue for a {type(value).__name__}: {value!r:.80}")


def key_value(key: str, value: object) -> KeyValue:
    """One attribute as a KeyValue message."""
    kv = KeyValue(key=key)
    set_value(kv.value, value)
    return kv


def add_attributes(
    repeated: RepeatedCompositeFieldContainer[KeyValue], attributes: Mapping[str, object]
) -> None:
    """Append `attributes` (in order, None values left out) to a repeated KeyValue field."""
    for key, value in attributes.items():
        if value is not None:
            kv = repeated.add()
            kv.key = key
            set_value(kv.value, value)


def add_resource(
    request: ExportTraceServiceRequest, attributes: Mapping[str, object], scope: str = ""
) -> ScopeSpans:
    """A new resource with these attributes in `request`, and its one scope (named `scope`)."""
    rs = request.resource_spans.add()
    add_attributes(rs.resource.attributes, attributes)
    scope_spans = rs.scope_spans.add()
    if scope:
        scope_spans.scope.name = scope
    return scope_spans


def add_span(
    scope_spans: ScopeSpans,
    attributes: Mapping[str, object],
    *,
    start_ns: int,
    end_ns: int,
    name: str = "",
    kind: Span.SpanKind.ValueType = SERVER,
    trace_state: str = "",
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
) -> Span:
    """A span (random ids unless given) with these attributes, appended to `scope_spans`."""
    span = scope_spans.spans.add()
    span.trace_id = os.urandom(16) if trace_id is None else trace_id
    span.span_id = os.urandom(8) if span_id is None else span_id
    span.kind = kind
    span.name = name
    span.start_time_unix_nano = start_ns
    span.end_time_unix_nano = end_ns
    span.trace_state = trace_state
    add_attributes(span.attributes, attributes)
    return span


def spans_request(
    resource: Mapping[str, object], spans: Iterable[Mapping[str, object]], **common: Any
) -> ExportTraceServiceRequest:
    """One resource whose spans have these attributes and `common` add_span arguments."""
    request = ExportTraceServiceRequest()
    scope_spans = add_resource(request, resource)
    for attributes in spans:
        add_span(scope_spans, attributes, **common)
    return request


def design_attributes(
    *,
    query_parameters: Iterable[str] | None = None,
    body_fields: Iterable[str] | None = None,
    request_size: int | None = None,
    response_size: int | None = None,
    validation_errors: Iterable[tuple[str, str]] | None = None,
    client_region: str | None = None,
    error_type: str | None = None,
    schema_version: int | None = attr.SCHEMA_VERSION,
) -> dict[str, object]:
    """The schema version 2 attributes of one request, as the instrumentation writes them.

    Names are given as they are sent (each a string; the instrumentation sends each once,
    sorted, but a test may want anything); `validation_errors` are (location, type) pairs,
    written as the two parallel string arrays. An argument left None leaves its attribute
    out; an empty sequence is still sent, as an empty array.
    """
    out: dict[str, object] = {}
    if schema_version is not None:
        out[attr.ATTR_SCHEMA_VERSION] = schema_version
    if query_parameters is not None:
        out[attr.ATTR_QUERY_PARAMETERS] = list(query_parameters)
    if body_fields is not None:
        out[attr.ATTR_BODY_FIELDS] = list(body_fields)
    if request_size is not None:
        out[attr.HTTP_REQUEST_BODY_SIZE] = request_size
    if response_size is not None:
        out[attr.HTTP_RESPONSE_BODY_SIZE] = response_size
    if validation_errors is not None:
        errors = list(validation_errors)
        out[attr.ATTR_VALIDATION_LOCATIONS] = [location for location, _ in errors]
        out[attr.ATTR_VALIDATION_TYPES] = [kind for _, kind in errors]
    if client_region is not None:
        out[attr.ATTR_CLIENT_REGION] = client_region
    if error_type is not None:
        out[attr.ERROR_TYPE] = error_type
    return out


def add_log_resource(
    request: ExportLogsServiceRequest, attributes: Mapping[str, object], scope: str = ""
) -> ScopeLogs:
    """A new resource with these attributes in a logs `request`, and its one scope."""
    rl = request.resource_logs.add()
    add_attributes(rl.resource.attributes, attributes)
    scope_logs = rl.scope_logs.add()
    if scope:
        scope_logs.scope.name = scope
    return scope_logs


def add_feedback(
    scope_logs: ScopeLogs,
    *,
    score: object,
    category: object,
    time_ns: int,
    route: str | None = None,
    consumer_id: str | None = None,
    observed_ns: int | None = None,
    legacy_event_name: bool = False,
    attributes: Mapping[str, object] | None = None,
) -> LogRecord:
    """One feedback event: a log record named `apiusage.feedback` with the contract's attributes.

    `score` and `category` are written as given (an int score, or a str or double for the
    forms a processor must also read or refuse). `legacy_event_name` puts the name in the
    `event.name` attribute, as SDKs before the LogRecord `event_name` field did, instead of in
    that field. `attributes` are added after the feedback ones.
    """
    record = scope_logs.log_records.add()
    record.time_unix_nano = time_ns
    record.observed_time_unix_nano = time_ns if observed_ns is None else observed_ns
    record.severity_number = SeverityNumber.SEVERITY_NUMBER_INFO
    record.severity_text = "INFO"
    values: dict[str, object] = {}
    if legacy_event_name:
        values["event.name"] = attr.EVENT_FEEDBACK
    else:
        record.event_name = attr.EVENT_FEEDBACK
    values[attr.ATTR_FEEDBACK_SCORE] = score
    values[attr.ATTR_FEEDBACK_CATEGORY] = category
    values[attr.ATTR_FEEDBACK_ROUTE] = route
    values[attr.ATTR_CONSUMER_ID] = consumer_id
    values.update(attributes or {})
    add_attributes(record.attributes, values)
    return record


def feedback_request(
    resource: Mapping[str, object], events: Iterable[Mapping[str, Any]], scope: str = "apiusage"
) -> ExportLogsServiceRequest:
    """One resource whose log records are these feedback events (add_feedback keyword arguments)."""
    request = ExportLogsServiceRequest()
    scope_logs = add_log_resource(request, resource, scope)
    for event in events:
        add_feedback(scope_logs, **event)
    return request
