"""Metrics and logs export requests, read only as far as passing them through needs.

The processor derives nothing from metrics or logs; it forwards their bodies unchanged to
`exporters.otlp`, as a Collector pipeline would.  Of a protobuf ExportMetricsServiceRequest or
ExportLogsServiceRequest, Python walks the top level only (its entries, ResourceMetrics or
ResourceLogs, counted against a limit); protobuf (upb, in C) checks the framing down into each
entry, and for a token bound to one service parses the Resource of each entry that holds the
bytes `service.name`.  Data points and log records are skipped by their length, never parsed.
A JSON body is parsed (in C) to check that it is an OTLP/JSON request, and read for those names
for a service-bound token, where a key the check reads may not repeat."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from .payload import InvalidPayload, PayloadTooLarge, load_json

__all__ = ["INLINE_BYTES", "PASSED_THROUGH", "services_in_json", "services_in_protobuf"]

#: Bodies up to this size are checked on the receiver's event loop (parsing one takes well under
#: 1 ms; reading 13,000 attributes for a service-bound token about 7 ms); a larger one on a worker
#: thread, so that it stalls no other connection.
INLINE_BYTES = 64 << 10

#: The signals passed through, each with its request message and resource entry names
#: (protobuf field name, then the OTLP/JSON one).
PASSED_THROUGH = {
    "metrics": ("ExportMetricsServiceRequest", "resource_metrics", "resourceMetrics"),
    "logs": ("ExportLogsServiceRequest", "resource_logs", "resourceLogs"),
}
_SERVICE_NAME = b"service.name"
_LEN = 2


def _varint(buf: bytes, p: int, end: int, where: str) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if p + i >= end:
            raise InvalidPayload(f"truncated varint ({where}) at byte {p}")
        b = buf[p + i]
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            return value, p + i + 1
    raise InvalidPayload(f"invalid varint ({where}) at byte {p}")


def _fields(buf: bytes, p: int, end: int, where: str) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field of the message in buf[p:end]; for a
    length-delimited field start:end is its payload."""
    while p < end:
        at = p
        tag, p = _varint(buf, p, end, where)
        num, wire = tag >> 3, tag & 7
        if num == 0:
            raise InvalidPayload(f"invalid field number 0 ({where}) at byte {at}")
        if wire == 0:
            _, q = _varint(buf, p, end, where)
        elif wire == 1:
            q = p + 8
        elif wire == 5:
            q = p + 4
        elif wire == _LEN:
            size, p = _varint(buf, p, end, where)
            q = p + size
        else:  # groups (3, 4) are in no OTLP message; 6 and 7 are not wire types
            raise InvalidPayload(f"unexpected wire type {wire} ({where}) at byte {at}")
        if q > end:
            raise InvalidPayload(f"truncated field ({where}) at byte {at}")
        yield num, wire, p, q
        p = q


def _one(seen: list[str | None]) -> str | None:
    """The service of a resource that names it `seen` times: None unless all say the same string.

    Which of two differing names a backend keeps is not ours to guess (a Collector's attribute map
    returns the first, a dict the last), so a resource naming two services names none."""
    return seen[0] if seen and all(s == seen[0] for s in seen) else None


def _stubs() -> tuple[Any, Any]:
    """Two messages protobuf (upb, in C) parses in place of the export requests' parts:

    - Request: the top level, entries (ResourceMetrics and ResourceLogs alike) whose field 1, the
      Resource, is kept as bytes; it checks the framing of entries and what is in them (scopes,
      data points, log records: unknown fields, skipped by their length) for about the memory of
      the body.
    - Entry: one entry with its Resource parsed (about 13 times its size in memory for a resource
      of nothing but attributes), read only for a service-bound token and only where the entry
      holds the bytes `service.name`."""
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2):
        known = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(known)
        pool.Add(known)
    stub = descriptor_pb2.FileDescriptorProto(
        name="apiusage/passthrough.proto",
        package="apiusage.passthrough",
        syntax="proto3",
        dependency=[resource_pb2.DESCRIPTOR.name],
    )
    field = descriptor_pb2.FieldDescriptorProto
    message, optional, repeated = field.TYPE_MESSAGE, field.LABEL_OPTIONAL, field.LABEL_REPEATED
    entry = stub.message_type.add(name="Entry")
    entry.field.add(
        name="resource",
        number=1,
        type=message,
        label=optional,
        type_name=".opentelemetry.proto.resource.v1.Resource",
    )
    lite = stub.message_type.add(name="LiteEntry")
    lite.field.add(name="resource", number=1, type=field.TYPE_BYTES, label=optional)
    request = stub.message_type.add(name="Request")
    request.field.add(
        name="entries", number=1, type=message, label=repeated, type_name=".apiusage.passthrough.LiteEntry"
    )
    pool.Add(stub)
    # Any: classes made at run time from a descriptor, whose fields no stub declares.
    request_class, entry_class = (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"apiusage.passthrough.{name}"))
        for name in ("Request", "Entry")
    )
    return request_class, entry_class


_Request, _Entry = _stubs()
_LiteEntry: Any = message_factory.GetMessageClass(_Request.DESCRIPTOR.fields_by_name["entries"].message_type)


def _entries(body: bytes, signal: str, max_resources: int) -> list[tuple[int, int]]:
    """Where each resource entry of a protobuf export request lies in it; PayloadTooLarge past
    `max_resources` top-level fields (a request has no other), counted before protobuf is asked
    so that a body of millions of empty entries costs no more than `max_resources` of them."""
    message, entry, _ = PASSED_THROUGH[signal]
    spans: list[tuple[int, int]] = []
    for n, (num, wire, p, q) in enumerate(_fields(body, 0, len(body), message)):
        if max_resources and n >= max_resources:
            raise PayloadTooLarge(
                f"more than {max_resources} {entry} in one request; send smaller batches "
                "(the limit is receivers.otlp.max_spans_per_request)"
            )
        if num == 1 and wire == _LEN:
            spans.append((p, q))
    return spans


def _broken(
    body: bytes, signal: str, spans: list[tuple[int, int]], parse: type[Message], first: int = 0
) -> InvalidPayload:
    """Which entry protobuf refuses, each parsed alone (`first`: the index of spans[0])."""
    message, entry, _ = PASSED_THROUGH[signal]
    for i, (p, q) in enumerate(spans, first):
        try:
            parse.FromString(body[p:q])
        except DecodeError:
            return InvalidPayload(
                f"{entry}[{i}] (bytes {p} to {q}) cannot be decoded: a field in it is truncated or "
                "broken, a string in its resource is not UTF-8, or its resource nests values more than "
                "100 deep"
            )
    return InvalidPayload(f"protobuf cannot decode this {message}")


def services_in_protobuf(
    body: bytes, signal: str, max_resources: int = 0, names: bool = True
) -> list[str | None]:
    """The `service.name` of each resource entry of a protobuf export request (None: absent, not
    a string, or named twice differently; all None unless `names`); InvalidPayload when protobuf
    cannot decode it down to its entries, PayloadTooLarge past `max_resources`.

    Protobuf parses it: a 4 MiB resource of 840,000 attributes takes it 0.1 s where a walk in
    Python took 5 s holding the GIL. Python walks the top level only, bounded by `max_resources`."""
    spans = _entries(body, signal, max_resources)
    try:
        _Request.FromString(body)
    except DecodeError:
        raise _broken(body, signal, spans, _LiteEntry) from None
    if not names:
        return [None] * len(spans)
    services: list[str | None] = []
    for i, (p, q) in enumerate(spans):
        if body.find(_SERVICE_NAME, p, q) < 0:
            services.append(None)
            continue
        try:
            item = _Entry.FromString(body[p:q])
        except DecodeError:
            raise _broken(body, signal, [(p, q)], _Entry, i) from None
        seen = [
            kv.value.string_value if kv.value.WhichOneof("value") == "string_value" else None
            for kv in item.resource.attributes
            if kv.key == "service.name"
        ]
        services.append(_one(seen))
    return services


#: Keys whose repetition in one JSON object would let the walk and the backend read different
#: services: a JSON reader keeps the last, a Collector's appends repeated fields.
_JSON_KEYS = frozenset(
    {"resourceMetrics", "resource_metrics", "resourceLogs", "resource_logs", "resource", "attributes"}
    | {"key", "value", "stringValue", "string_value"}
)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    doc: dict[str, object] = {}
    for key, value in pairs:
        if key in doc and key in _JSON_KEYS:
            raise InvalidPayload(f"JSON object has the key {key!r} more than once")
        doc[key] = value
    return doc


def services_in_json(body: bytes, signal: str, names: bool = True) -> list[str | None]:
    """The `service.name` of each resource entry of an OTLP/JSON export request (None: absent, not
    a string, or named twice differently; all None unless `names`); InvalidPayload when it is not
    an OTLP/JSON request."""
    message, entry, json_entry = PASSED_THROUGH[signal]
    # Repeated keys matter only to the names; the hook is a Python call per object.
    doc = load_json(body, _no_duplicates if names else None)
    if not isinstance(doc, dict):
        raise InvalidPayload(f"JSON body must be an object with a {json_entry} list ({message})")
    entries: list[object] = []
    for name in (json_entry, entry):  # OTLP/JSON readers accept both names, and both at once
        found = doc.get(name, [])
        if not isinstance(found, list):
            raise InvalidPayload(f"{name} must be a list ({message})")
        entries.extend(found)
    if not names:
        return [None] * len(entries)
    services: list[str | None] = []
    for item in entries:
        resource = item.get("resource") if isinstance(item, dict) else None
        attributes = resource.get("attributes") if isinstance(resource, dict) else None
        seen: list[str | None] = []
        for kv in attributes if isinstance(attributes, list) else ():
            if isinstance(kv, dict) and kv.get("key") == "service.name":
                value = kv.get("value")
                given = (
                    [value[k] for k in ("stringValue", "string_value") if k in value]
                    if isinstance(value, dict)
                    else []
                )
                seen.extend(n if isinstance(n, str) else None for n in given or [None])
        services.append(_one(seen))
    return services
