"""OTLP trace requests built from plain Python values (for the demo backfill, tests, benchmarks).

One encoding of span attributes: bool, int, float, str, bytes, a list or tuple (an array) and a
mapping (a key-value list) become the matching AnyValue; `None` leaves an attribute out (or,
given to `set_value` directly, leaves the AnyValue empty). Needs opentelemetry-proto (the
`processor` extra).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Span

if TYPE_CHECKING:  # the type of a message's repeated field; internal, so not imported at run time
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

__all__ = [
    "SERVER",
    "AnyValue",
    "ExportTraceServiceRequest",
    "KeyValue",
    "ScopeSpans",
    "Span",
    "add_attributes",
    "add_resource",
    "add_span",
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
