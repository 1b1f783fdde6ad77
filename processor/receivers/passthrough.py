"""Metrics and logs export requests, read only as far as passing them through needs.

The processor derives nothing from metrics or logs; it forwards their bodies unchanged to
`exporters.otlp`, as a Collector pipeline would.  Of a protobuf ExportMetricsServiceRequest or
ExportLogsServiceRequest, Python walks the top level only (its entries, ResourceMetrics or
ResourceLogs, counted against a limit); protobuf (upb, in C) checks the framing down into each
entry, and for a token bound to one service parses the Resource of each entry that holds the
bytes `service.name`.  Data points and log records are skipped by their length, never parsed.
A JSON body is parsed (in C) to check that it is an OTLP/JSON request, and read for those names
for a service-bound token, where a key the check reads may not repeat.

Logs requests are also read for developer feedback (log records named `apiusage.feedback`) and
feature-flag evaluations (named `feature_flag.evaluation`), and only as far as that needs: a body
without either name's bytes is not read again; otherwise protobuf parses the entries, scopes and
records as bytes, once for both kinds, and C code (`bytes.count` mapped over them) picks the
records that name an event (its event_name field, or an `event.name` attribute, as encoders write
them), so only they are decoded in full, each once: 100,000 records of which 3 are feedback cost 3
records' decoding, never a Python step per record, and log lines that merely mention a name cost
none. A JSON body with those bytes (or a `\\u` escape that could spell them) is walked over its
records, off the event loop."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from itertools import compress
from operator import methodcaller
from typing import Any, NamedTuple

from apiusage.conventions.attributes import EVENT_FEATURE_FLAG_EVALUATION, EVENT_FEEDBACK
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from ..derive.feedback import EVENT_NAME_ATTRIBUTE, EventRecord
from ..derive.feedback import feedback_keys as _feedback_keys
from ..derive.flags import EVALUATION_RECORD_KEYS, EvaluationRecord
from .payload import InvalidPayload, PayloadTooLarge, load_json

__all__ = [
    "FEEDBACK_BYTES",
    "FLAG_BYTES",
    "INLINE_BYTES",
    "MAX_FEEDBACK_RECORDS",
    "MAX_FLAG_RECORDS",
    "PASSED_THROUGH",
    "feedback_in_protobuf",
    "holds_events",
    "logs_events_in_json",
    "logs_in_json",
    "logs_in_protobuf",
    "services_in_json",
    "services_in_protobuf",
]

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


def _stubs() -> tuple[Any, ...]:
    """Messages protobuf (upb, in C) parses in place of the export requests' parts:

    - Request: the top level, entries (ResourceMetrics and ResourceLogs alike) whose field 1, the
      Resource, is kept as bytes; it checks the framing of entries and what is in them (scopes,
      data points, log records: unknown fields, skipped by their length) for about the memory of
      the body.
    - Entry: one entry with its Resource parsed (about 13 times its size in memory for a resource
      of nothing but attributes), read only for a service-bound token and only where the entry
      holds the bytes `service.name`.
    - LogsRequest, LogsEntry, LogsScope: a logs request read for feedback, each level's children
      (entries, an entry's resource and scopes, records) as bytes."""
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
    # Logs read for feedback: each level's children kept as bytes, to be picked in C (see above).
    logs = stub.message_type.add(name="LogsRequest")
    logs.field.add(name="entries", number=1, type=field.TYPE_BYTES, label=repeated)
    logs_entry = stub.message_type.add(name="LogsEntry")
    logs_entry.field.add(name="resource", number=1, type=field.TYPE_BYTES, label=optional)
    logs_entry.field.add(name="scopes", number=2, type=field.TYPE_BYTES, label=repeated)
    logs_scope = stub.message_type.add(name="LogsScope")
    logs_scope.field.add(name="records", number=2, type=field.TYPE_BYTES, label=repeated)
    pool.Add(stub)
    # Any: classes made at run time from a descriptor, whose fields no stub declares.
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"apiusage.passthrough.{name}"))
        for name in ("Request", "Entry", "LogsRequest", "LogsEntry", "LogsScope")
    )


_Request, _Entry, _LogsRequest, _LogsEntry, _LogsScope = _stubs()
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


def _json_entries(body: bytes, signal: str, names: bool) -> list[object]:
    """The resource entries of an OTLP/JSON export request; InvalidPayload when it is not one."""
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
    return entries


def _json_service(item: object) -> str | None:
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
    return _one(seen)


def services_in_json(body: bytes, signal: str, names: bool = True) -> list[str | None]:
    """The `service.name` of each resource entry of an OTLP/JSON export request (None: absent, not
    a string, or named twice differently; all None unless `names`); InvalidPayload when it is not
    an OTLP/JSON request."""
    entries = _json_entries(body, signal, names)
    return [_json_service(item) for item in entries] if names else [None] * len(entries)


FEEDBACK_BYTES = EVENT_FEEDBACK.encode()
FLAG_BYTES = EVENT_FEATURE_FLAG_EVALUATION.encode()
#: Feedback records read from one request at most: feedback is typed by people, an SDK exports at
#: most 512 log records at once by default, and decoding one costs about 20 µs of Python.
MAX_FEEDBACK_RECORDS = 10_000
#: Feature-flag evaluation records read from one request at most: a request evaluates a few flags,
#: an SDK exports 512 log records at once by default, and 10,000 cost about 0.2 s to decode.
MAX_FLAG_RECORDS = 10_000


def holds_events(body: bytes) -> bool:
    """Whether a logs body may hold feedback or flag evaluation records (then Python decodes
    them: the receivers read it off their event loop)."""
    return FEEDBACK_BYTES in body or FLAG_BYTES in body


class _Kind(NamedTuple):
    """An event read from logs requests: its name, where a record names it (see _named), and what
    one such record is turned into."""

    name: str
    raw: bytes
    holds: Callable[[bytes], int]
    # A record is decoded only when it holds the name as every OTLP encoder writes it: the
    # event_name field (12, length-delimited: tag 0x62, then the length), or an `event.name`
    # attribute (KeyValue: key, then an AnyValue string). A log line that merely mentions the
    # name is not decoded.
    field: Callable[[bytes], int]
    attribute: Callable[[bytes], int]
    what: str  # for the PayloadTooLarge message
    max_records: int
    keys: frozenset[str]


def _kind(name: str, what: str, max_records: int, keys: frozenset[str]) -> _Kind:
    raw = name.encode()
    return _Kind(
        name,
        raw,
        methodcaller("count", raw),
        methodcaller("count", b"\x62" + bytes([len(raw)]) + raw),
        methodcaller("count", b"\x0a\x0aevent.name\x12" + bytes([len(raw) + 2, 0x0A, len(raw)]) + raw),
        what,
        max_records,
        keys,
    )


def _kinds(
    feedback: frozenset[str] | None, max_feedback: int, flags: frozenset[str] | None, max_flags: int
) -> list[_Kind | None]:
    """[feedback, flags], None for a kind not read."""
    return [
        None if feedback is None else _kind(EVENT_FEEDBACK, "feedback", max_feedback, feedback),
        None
        if flags is None
        else _kind(EVENT_FEATURE_FLAG_EVALUATION, "feature-flag evaluation", max_flags, flags),
    ]


def _holding(items: Sequence[bytes], kinds: Sequence[_Kind]) -> list[int]:
    """The indexes of the items that hold a kind's name, found without a Python step per item."""
    if len(kinds) == 1:
        return list(compress(range(len(items)), map(kinds[0].holds, items)))
    return list(compress(range(len(items)), map(max, *(map(k.holds, items) for k in kinds))))


def _named(records: Sequence[bytes], kind: _Kind) -> list[int]:
    """The indexes of the records that name the kind's event, found as _holding finds them."""
    return list(
        compress(range(len(records)), map(max, map(kind.field, records), map(kind.attribute, records)))
    )


def _too_many(kind: _Kind) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"more than {kind.max_records} {kind.what} log records ({kind.name!r}) in one request; "
        "send smaller batches"
    )


def _value(value: Any) -> object:
    """An AnyValue as str, int, float or bool; None for any other kind."""
    kind = value.WhichOneof("value")
    if kind in ("string_value", "int_value", "double_value", "bool_value"):
        return getattr(value, kind)
    return None


def _events_in_protobuf(body: bytes, kinds: list[_Kind | None]) -> list[list[Any]]:
    """For each kind, the records of a protobuf ExportLogsServiceRequest that name its event: one
    parse of the body for all kinds, and each record decoded once, whichever kinds it names."""
    out: list[list[Any]] = [[] for _ in kinds]
    present = [n for n, k in enumerate(kinds) if k is not None and k.raw in body]
    live = [k for k in kinds if k is not None and k.raw in body]
    if not live:
        return out
    try:
        entries = list(_LogsRequest.FromString(body).entries)
    except DecodeError:
        raise InvalidPayload("protobuf cannot decode this ExportLogsServiceRequest") from None
    # Which records to decode, all found before any is: a body of a million of them costs no more
    # than finding them.
    counts = dict.fromkeys(range(len(kinds)), 0)
    found: list[tuple[str, str | None, bytes, list[int]]] = []
    for i in _holding(entries, live):
        where = f"resource_logs[{i}]"
        try:
            entry = _LogsEntry.FromString(entries[i])
        except DecodeError:
            raise InvalidPayload(f"{where} cannot be decoded") from None
        scopes = list(entry.scopes)
        service: str | None = None
        named = False  # read from the resource once, for the entry's first record picked
        for j in _holding(scopes, live):
            try:
                # A list: each read of a protobuf repeated field makes a new bytes object, and
                # every kind reads every record twice.
                records = list(_LogsScope.FromString(scopes[j]).records)
            except DecodeError:
                raise InvalidPayload(f"{where}.scope_logs[{j}] cannot be decoded") from None
            # The records holding a name at all, then of those the ones naming it: one cheap pass
            # over a scope of 100,000 log lines instead of two per kind.
            holding = _holding(records, live)
            candidates = [records[k] for k in holding]
            picked: dict[int, list[int]] = {}
            for n, kind in zip(present, live, strict=True):
                mine = [holding[k] for k in _named(candidates, kind)]
                if not mine:
                    continue
                counts[n] += len(mine)
                if kind.max_records and counts[n] > kind.max_records:
                    raise _too_many(kind)
                for k in mine:
                    picked.setdefault(k, []).append(n)
            if not picked:
                continue
            if not named:
                named = True
                try:
                    resource = resource_pb2.Resource.FromString(entry.resource)
                except DecodeError:
                    raise InvalidPayload(f"{where}.resource cannot be decoded") from None
                service = _one(
                    [
                        kv.value.string_value if kv.value.WhichOneof("value") == "string_value" else None
                        for kv in resource.attributes
                        if kv.key == "service.name"
                    ]
                )
            found.extend(
                (f"{where}.scope_logs[{j}].log_records[{k}]", service, records[k], picked[k])
                for k in sorted(picked)
            )
    for where, service, raw, which in found:
        try:
            record = logs_pb2.LogRecord.FromString(raw)
        except DecodeError:
            raise InvalidPayload(
                f"{where} cannot be decoded: a field in it is truncated or broken, a string is not "
                "UTF-8, or a value nests more than 100 deep"
            ) from None
        for n in which:
            keys = kinds[n].keys  # type: ignore[union-attr]  # only live kinds are picked
            attributes: dict[str, object] = {}
            for kv in record.attributes:
                if kv.key in keys and kv.key not in attributes:  # the first of a repeated key
                    attributes[kv.key] = _value(kv.value)
            times = (record.time_unix_nano, record.observed_time_unix_nano)
            if n == 0:
                out[n].append(EventRecord(service, record.event_name, attributes, *times))
            else:
                out[n].append(
                    EvaluationRecord(
                        service, record.event_name, attributes, *times, record.trace_id, record.span_id
                    )
                )
    return out


def feedback_in_protobuf(
    body: bytes, max_records: int = MAX_FEEDBACK_RECORDS, keys: frozenset[str] | None = None
) -> list[EventRecord]:
    """The log records of a protobuf ExportLogsServiceRequest that name `apiusage.feedback` (see
    _Kind), with the attributes named in `keys` (derive.feedback.feedback_keys()); InvalidPayload
    naming the record protobuf cannot decode, PayloadTooLarge past `max_records` such records
    (0: no bound). Call it on a body services_in_protobuf has accepted."""
    return logs_in_protobuf(body, max_records, feedback_keys=keys, flags=False)[0]


def logs_in_protobuf(
    body: bytes,
    max_feedback: int = MAX_FEEDBACK_RECORDS,
    max_flags: int = MAX_FLAG_RECORDS,
    feedback_keys: frozenset[str] | None = None,
    flags: bool = True,
) -> tuple[list[EventRecord], list[EvaluationRecord]]:
    """feedback_in_protobuf's records and those that name `feature_flag.evaluation` (with the
    EVALUATION_RECORD_KEYS attributes, trace and span id), from one parse of the body;
    PayloadTooLarge past `max_flags` of those (0: no bound). `flags` False reads feedback only."""
    kinds = _kinds(
        _feedback_keys() if feedback_keys is None else feedback_keys,
        max_feedback,
        EVALUATION_RECORD_KEYS if flags else None,
        max_flags,
    )
    feedback, evaluations = _events_in_protobuf(body, kinds)
    return feedback, evaluations


def _both(obj: object, *names: str) -> list[object]:
    """The list under either OTLP/JSON name of a field (both when both are there); [] otherwise."""
    out: list[object] = []
    if isinstance(obj, dict):
        for name in names:
            found = obj.get(name)
            if isinstance(found, list):
                out.extend(found)
    return out


_JSON_INT = re.compile(r"-?[0-9]+")  # not int()'s " 3", "3_0" or "٣"


def _json_int(value: object) -> int | None:
    """An OTLP/JSON int64 (a string of digits, or a number)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and len(value) < 22 and _JSON_INT.fullmatch(value):
        return int(value)
    return None


def _json_value(value: object) -> object:
    """An OTLP/JSON AnyValue as str, int, float or bool; None for any other kind."""
    if not isinstance(value, dict):
        return None
    for key in ("stringValue", "string_value"):
        if isinstance(value.get(key), str):
            return value[key]
    for key in ("intValue", "int_value"):
        if key in value:
            return _json_int(value[key])
    for key in ("doubleValue", "double_value"):
        if key in value:
            double = value[key]
            if isinstance(double, (int, float)) and not isinstance(double, bool):
                return float(double)
            if isinstance(double, str):
                try:
                    return float(double)
                except ValueError:
                    return None
            return None
    for key in ("boolValue", "bool_value"):
        if isinstance(value.get(key), bool):
            return value[key]
    return None


def _json_time(record: dict[str, object], *names: str) -> int:
    for name in names:
        if name in record:
            found = _json_int(record[name])
            return found if found is not None and found > 0 else 0
    return 0


_HEX_ID = re.compile(r"[0-9a-fA-F]*")


def _json_id(value: object) -> bytes:
    """An OTLP/JSON trace or span id (hex, as OTLP/JSON writes them); b"" when it is not one."""
    if isinstance(value, str) and len(value) <= 32 and len(value) % 2 == 0 and _HEX_ID.fullmatch(value):
        return bytes.fromhex(value)
    return b""


def logs_in_json(
    body: bytes,
    names: bool = True,
    max_records: int = MAX_FEEDBACK_RECORDS,
    keys: frozenset[str] | None = None,
) -> tuple[list[str | None], list[EventRecord]]:
    """services_in_json's answer for a logs request, and its feedback log records (those named
    `apiusage.feedback`), read from one parse; PayloadTooLarge past `max_records` of them."""
    services, feedback, _ = logs_events_in_json(body, names, max_records, feedback_keys=keys, flags=False)
    return services, feedback


def logs_events_in_json(
    body: bytes,
    names: bool = True,
    max_feedback: int = MAX_FEEDBACK_RECORDS,
    max_flags: int = MAX_FLAG_RECORDS,
    feedback_keys: frozenset[str] | None = None,
    flags: bool = True,
) -> tuple[list[str | None], list[EventRecord], list[EvaluationRecord]]:
    """services_in_json's answer for a logs request, its feedback log records and its feature-flag
    evaluation records (as logs_in_protobuf reads them), read from one parse; PayloadTooLarge past
    `max_feedback` or `max_flags` of them (0: no bound). `flags` False reads feedback only."""
    entries = _json_entries(body, "logs", names)
    services: list[str | None] = [_json_service(item) for item in entries] if names else [None] * len(entries)
    kinds = _kinds(
        _feedback_keys() if feedback_keys is None else feedback_keys,
        max_feedback,
        EVALUATION_RECORD_KEYS if flags else None,
        max_flags,
    )
    by_name = {k.name: (n, k) for n, k in enumerate(kinds) if k is not None}
    found: list[list[Any]] = [[] for _ in kinds]
    # Without those bytes no record can be named so, unless a \u escape spells a letter of one.
    if b"\\u" not in body and not any(k.raw in body for _, k in by_name.values()):
        return services, found[0], found[1]
    every = frozenset().union(*(k.keys for _, k in by_name.values()))
    for i, item in enumerate(entries):
        service: str | None = services[i]
        read = names  # the service was read above
        for scope in _both(item, "scopeLogs", "scope_logs"):
            for record in _both(scope, "logRecords", "log_records"):
                if not isinstance(record, dict):
                    continue
                name = record.get("eventName", record.get("event_name")) or ""
                if name and (not isinstance(name, str) or name not in by_name):
                    continue  # no event read here, whatever its attributes say
                attributes: dict[str, object] = {}
                for kv in _both(record, "attributes"):
                    if not isinstance(kv, dict):
                        continue
                    key = kv.get("key")
                    if isinstance(key, str) and key in every and key not in attributes:
                        attributes[key] = _json_value(kv.get("value"))
                named = name or attributes.get(EVENT_NAME_ATTRIBUTE)
                if not isinstance(named, str) or named not in by_name:
                    continue
                n, kind = by_name[named]
                if kind.max_records and len(found[n]) >= kind.max_records:
                    raise _too_many(kind)
                if not read:
                    service, read = _json_service(item), True
                mine = {k: v for k, v in attributes.items() if k in kind.keys}
                times = (
                    _json_time(record, "timeUnixNano", "time_unix_nano"),
                    _json_time(record, "observedTimeUnixNano", "observed_time_unix_nano"),
                )
                if n == 0:
                    found[n].append(EventRecord(service, kind.name if name else "", mine, *times))
                else:
                    ids = (
                        _json_id(record.get("traceId", record.get("trace_id"))),
                        _json_id(record.get("spanId", record.get("span_id"))),
                    )
                    found[n].append(EvaluationRecord(service, kind.name if name else "", mine, *times, *ids))
    return services, found[0], found[1]
