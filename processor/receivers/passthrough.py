"""Metrics and logs export requests, read only as far as passing them through needs.

The processor derives nothing from metrics or logs; it forwards their bodies unchanged to
`exporters.otlp`, as a Collector pipeline would.  Of a protobuf ExportMetricsServiceRequest or
ExportLogsServiceRequest only the top level is walked: the framing of its resource entries
(field 1: ResourceMetrics, ResourceLogs) and, in each, its Resource's `service.name` (for tokens
bound to one service).  Data points and log records are skipped by their length, never parsed.
A JSON body is parsed only to read those names for a service-bound token.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

from .payload import InvalidPayload, PayloadTooLarge

__all__ = ["INLINE_BYTES", "PASSED_THROUGH", "services_in_json", "services_in_protobuf"]

#: Bodies up to this size are walked on the receiver's event loop. The walk is Python, about
#: 2 µs per resource: a 64 KiB body of empty resources costs 60 ms at worst, a larger one goes
#: to a worker thread so that it stalls no other connection.
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


def _utf8(buf: bytes, start: int, stop: int, where: str) -> str:
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPayload(f"string is not UTF-8 ({where}) at byte {start}") from None


def _service_name(buf: bytes, start: int, stop: int, seen: list[str | None]) -> None:
    """Append to `seen` each `service.name` among the attributes of the Resource in buf[start:stop]
    (None for one that is not a string)."""
    for num, wire, p, q in _fields(buf, start, stop, "Resource"):
        if num != 1 or wire != _LEN:  # attributes
            continue
        key, any_value = None, None
        for knum, kwire, kp, kq in _fields(buf, p, q, "KeyValue"):
            if knum == 1 and kwire == _LEN:
                key = buf[kp:kq]
            elif knum == 2 and kwire == _LEN:
                any_value = (kp, kq)
        if key != _SERVICE_NAME:
            continue
        value = None
        if any_value is not None:
            for vnum, vwire, vp, vq in _fields(buf, *any_value, "AnyValue"):
                # A oneof: the last member on the wire is the one set.
                value = _utf8(buf, vp, vq, "AnyValue.string_value") if vnum == 1 and vwire == _LEN else None
        seen.append(value)


def _one(seen: list[str | None]) -> str | None:
    """The service of a resource that names it `seen` times: None unless all say the same string.

    Which of two differing names a backend keeps is not ours to guess (a Collector's attribute map
    returns the first, a dict the last), so a resource naming two services names none."""
    return seen[0] if seen and all(s == seen[0] for s in seen) else None


def services_in_protobuf(body: bytes, signal: str, max_resources: int = 0) -> list[str | None]:
    """The `service.name` of each resource entry of a protobuf export request (None: absent or not
    a string); InvalidPayload when its framing is broken, PayloadTooLarge past `max_resources`."""
    message, entry, _ = PASSED_THROUGH[signal]
    services: list[str | None] = []
    end = len(body)
    for num, wire, p, q in _fields(body, 0, end, message):
        if num != 1 or wire != _LEN:
            continue  # unknown fields (a wrong wire type too) are kept and passed on, as protobuf does
        if max_resources and len(services) >= max_resources:
            raise PayloadTooLarge(
                f"more than {max_resources} {entry} in one request; send smaller batches "
                "(the limit is receivers.otlp.max_spans_per_request)"
            )
        seen: list[str | None] = []
        for rnum, rwire, rp, rq in _fields(body, p, q, entry):
            if rnum == 1 and rwire == _LEN:  # resource; a repeated one is merged: attributes add up
                _service_name(body, rp, rq, seen)
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


def services_in_json(body: bytes, signal: str) -> list[str | None]:
    """The `service.name` of each resource entry of an OTLP/JSON export request (None: absent, not
    a string, or named twice differently); InvalidPayload when it is not an OTLP/JSON request."""
    message, entry, json_entry = PASSED_THROUGH[signal]
    try:
        doc = json.loads(body, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"JSON body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InvalidPayload(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidPayload("JSON body is nested too deeply") from None
    except InvalidPayload:
        raise
    except ValueError:
        raise InvalidPayload(
            f"JSON body has an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidPayload(f"JSON body must be an object with a {json_entry} list ({message})")
    entries: list[object] = []
    for name in (json_entry, entry):  # OTLP/JSON readers accept both names, and both at once
        found = doc.get(name, [])
        if not isinstance(found, list):
            raise InvalidPayload(f"{name} must be a list ({message})")
        entries.extend(found)
    services: list[str | None] = []
    for item in entries:
        resource = item.get("resource") if isinstance(item, dict) else None
        attributes = resource.get("attributes") if isinstance(resource, dict) else None
        seen: list[str | None] = []
        for kv in attributes if isinstance(attributes, list) else ():
            if isinstance(kv, dict) and kv.get("key") == "service.name":
                value = kv.get("value")
                names = (
                    [value[k] for k in ("stringValue", "string_value") if k in value]
                    if isinstance(value, dict)
                    else []
                )
                seen.extend(n if isinstance(n, str) else None for n in names or [None])
        services.append(_one(seen))
    return services
