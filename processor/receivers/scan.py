"""Fast extraction of the span fields the processor needs from OTLP trace payloads.

A ``Scanner`` takes a serialized
``opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`` and returns
only what metric derivation uses, as plain tuples::

    scanner = Scanner(span_keys=["http.route", ...], resource_keys=["service.name"])
    resources, spans = scanner.scan(payload)

``resources`` holds one tuple per ResourceSpans (in order): the value of each of
``resource_keys`` in ``resource.attributes``, else None.

``spans`` holds one tuple per Span of every ScopeSpans of every ResourceSpans, in
wire order::

    (resource_index, kind, start_time_unix_nano, end_time_unix_nano,
     trace_id, span_id, trace_state, status_code, v_0, ..., v_{n-1})

``resource_index`` indexes ``resources``; ``v_i`` is the value of attribute
``span_keys[i]``, else None.  Absent fields take their proto3 defaults (0, b"",
"").  Attribute values: string_value -> str, bool_value -> bool, int_value ->
int, double_value -> float; any other AnyValue (kvlist, bytes, string table
index, empty) -> None, and so is an array_value, except under an array key.
When a key occurs several times the last occurrence wins, as when building a
dict from the attribute list.  An entry of the key lists may be a group of
alternative keys (a tuple or list of str): its value is that of the group's
first key whose value is not None, so an array under a scalar key (say an
array ``apiusage.consumer.id``) counts as absent and the group's next key
(``enduser.id``) is tried.

``Scanner(..., array_keys=[...])`` names the span keys whose values are arrays
(each one of ``span_keys`` or inside one of its groups, else ValueError; a str
is refused, as for the key lists; resource keys have none).  An array key's
array_value -> a tuple of its elements, each converted as a scalar value except
that any other element (a nested array, kvlist, bytes, empty) is None; an empty
array ``()`` is a value (it ends a group's search).  A scalar value under an
array key is returned as it is, like under any key: the caller decides what it
means.  An array value holds at most ``max_array_items + 1`` elements
(``Scanner(..., max_array_items=64)``; the rest are skipped, never converted),
so ``len(v) > max_array_items`` says the array was cut; ``max_array_items=0``
makes every array value ``()``.  As protobuf merges them, the elements of
successive array_value fields of one AnyValue (also of a KeyValue's repeated
``value`` fields) add up, and another member of the value oneof between them
starts the array afresh.

``Scanner(..., event_names=[...], event_keys=[...], max_events=16)`` (keyword
only) also returns span events (``Span.events``): when ``event_names`` is not
empty, every span tuple gets ONE more element after ``v_{n-1}``, a tuple of the
span's events whose name is one of ``event_names`` (a sequence of str, no
groups; an event's last ``name`` field counts, an absent one is ``""``), in wire
order::

    ((name, e_0, ..., e_{k-1}), ...)

``e_j`` is the value of ``event_keys[j]`` in the event's attributes, converted
as a span attribute's (groups of alternative keys allowed; the last occurrence
wins); an array_value is None (there are no event array keys), so a group's
next key is tried.  ``()`` when no event matches.  At most ``max_events + 1``
events are returned, so ``len(events) > max_events`` says the list was cut:
the later events are skipped by length, never converted (the C scanner reads
only the name of an event whose name is not wanted, and none of the events
past the bound); ``max_events=0`` returns at most one event, for "did it have
one".  With ``event_names`` empty (the default) the tuples are as above, and
the C scanner skips events by length as before.  PyScanner's protobuf parse
holds every event, wanted or not, in its own memory.

Two implementations return identical results whenever protobuf parses the
payload:

* the C extension ``_cscan`` walks the wire format directly, creating Python
  objects only for returned values (fast path);
* ``PyScanner`` parses with the protobuf classes of ``opentelemetry-proto`` (the
  reference, used when the extension is missing or ``APIUSAGE_PURE_PYTHON=1``).

On payloads protobuf rejects, either may raise ``ScanError`` or (the C scanner,
which does not look at fields it does not return) produce a result; neither
raises anything else.

``Scanner(span_keys, resource_keys, max_spans=N)`` with N > 0 raises
``TooManySpans`` (a ``ScanError``), ``"more than N spans in one request"``, for
a request of more than N spans, and ``"more than N resource_spans in one
request"`` for one of more than N ResourceSpans (empty ones cost a tuple each
too), whichever bound wire order reaches first.  The C scanner raises it before
building tuple N+1, PyScanner before protobuf parses the payload (a walk of the
wire format that stops there), so a body of millions of tiny spans costs at
most N tuples of memory.  Both raise it for the same payloads when protobuf
parses them; on a malformed payload over a bound either may raise it or
another ``ScanError``.  Neither makes Python objects of more than
``max_array_items + 1`` elements of one array value, whatever its length: the C
scanner skips the elements past the bound by length (and every array of a key
that is not an array key); PyScanner wraps only the
elements kept, but protobuf's parse holds all of them in its own memory (about
9 bytes for each byte of an array of tiny strings).

A scanner is immutable once built: one instance may be shared by threads, and a
scan may start while another is suspended inside the same scanner (a gc callback
or finalizer runs mid-scan; the C scanner holds the GIL but its allocations can
trigger those) without either result changing.  A bytes-like payload that is
mutable must not be changed during its scan; if it is, the C scanner still reads
only within it (the result is then undefined: a mix of old and new bytes).
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from ..errors import ProcessorError

__all__ = ["IMPLEMENTATION", "CScanner", "PyScanner", "ScanError", "Scanner", "TooManySpans"]


class ScanError(ProcessorError, ValueError):
    """The payload is not a well-formed ExportTraceServiceRequest; str() says what and at which byte offset.

    Messages look like ``"truncated length-delimited field (Span.attributes) at
    byte 1234"``: what is wrong, the field concerned (``Message.field``, or
    ``Message field N`` for a field number the message does not declare, or just
    ``Message`` for a bad tag) and the offset in the payload of that field's
    tag; for invalid UTF-8 the offset of the offending byte.
    """


class TooManySpans(ScanError):
    """More spans than the scanner's ``max_spans``; str() is ``"more than N spans in one request"``."""


def _check_max_spans(max_spans: int) -> int:
    """As the C scanner's ``n`` argument: an int (or __index__) from 0 to sys.maxsize."""
    max_spans = operator.index(max_spans)
    if max_spans < 0:
        raise ValueError(f"max_spans must be 0 (unlimited) or more, not {max_spans}")
    if max_spans > sys.maxsize:
        raise OverflowError("max_spans is too large")
    return max_spans


def _check_keys(keys: Sequence[str | Sequence[str]], argname: str) -> tuple[Any, ...]:
    """Each entry is a key, or a group of alternative keys (a tuple or list of str)."""
    if isinstance(keys, (str, bytes, bytearray)):
        raise TypeError(f"{argname} must be a sequence of str, not {type(keys).__name__}")
    keys = tuple(tuple(k) if isinstance(k, (tuple, list)) else k for k in keys)
    grouped = any(isinstance(k, tuple) for k in keys)
    seen: set[str] = set()
    for entry in keys:
        for k in entry if isinstance(entry, tuple) else (entry,):
            if not isinstance(k, str):
                raise TypeError(f"{argname} must contain str, not {type(k).__name__}")
            k.encode("utf-8")  # same UnicodeEncodeError as the C scanner for lone surrogates
            if grouped and k in seen:
                raise ValueError(f"{argname}: key {k!r} appears in more than one group")
            seen.add(k)
        if isinstance(entry, tuple) and not entry:
            raise ValueError(f"{argname}: a group needs at least one key")
    return keys


def _check_max_array_items(max_array_items: int) -> int:
    """As the C scanner's ``max_array_items`` argument: an int (or __index__) from 0 to sys.maxsize."""
    max_array_items = operator.index(max_array_items)
    if max_array_items < 0:
        raise ValueError(f"max_array_items must be 0 (no array items) or more, not {max_array_items}")
    if max_array_items > sys.maxsize:
        raise OverflowError("max_array_items is too large")
    return max_array_items


def _check_max_events(max_events: int) -> int:
    """As the C scanner's ``max_events`` argument: an int (or __index__) from 0 to sys.maxsize."""
    max_events = operator.index(max_events)
    if max_events < 0:
        raise ValueError(f"max_events must be 0 or more, not {max_events}")
    if max_events > sys.maxsize:
        raise OverflowError("max_events is too large")
    return max_events


def _check_event_names(names: Sequence[str]) -> tuple[str, ...]:
    """A sequence of str, no groups."""
    names = _check_keys(names, "event_names")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"event_names must contain str, not {type(name).__name__}")
    return names


def _check_array_keys(array_keys: Collection[str], span_keys: frozenset[str]) -> tuple[str, ...]:
    """Each one a str among the span keys (in a group or not)."""
    if isinstance(array_keys, (str, bytes, bytearray)):
        raise TypeError(f"array_keys must be a collection of str, not {type(array_keys).__name__}")
    array_keys = tuple(array_keys)
    for k in array_keys:
        if not isinstance(k, str):
            raise TypeError(f"array_keys must contain str, not {type(k).__name__}")
        k.encode("utf-8")  # same UnicodeEncodeError as the C scanner for lone surrogates
        if k not in span_keys:
            raise ValueError(f"array_keys: key {k!r} is not one of span_keys")
    return array_keys


_SCALARS = frozenset(("string_value", "bool_value", "int_value", "double_value"))


def _element(v: Any) -> object:
    """An array element: a scalar, else None (a nested array too)."""
    which = v.WhichOneof("value")
    return getattr(v, which) if which in _SCALARS else None


def _array(v: Any, array_limit: int) -> tuple[object, ...]:
    """An array value's first `array_limit` elements."""
    # slicing wraps only the elements kept: the rest of a huge array costs no objects
    return tuple([_element(e) for e in v.array_value.values[:array_limit]]) if array_limit else ()


def _pick(
    attributes: Any,
    keys: tuple[Any, ...],
    wanted: frozenset[str],
    arrays: frozenset[str],
    array_limit: int,
) -> tuple[Any, ...]:
    if not keys:
        return ()
    found: dict[str, object] = {}
    for kv in attributes:
        key = kv.key
        if key in wanted:
            v = kv.value
            which = v.WhichOneof("value")
            if which in _SCALARS:
                found[key] = getattr(v, which)
            elif which == "array_value" and key in arrays:
                found[key] = _array(v, array_limit)
            else:  # an array under a scalar key is absent, as are kvlist, bytes and empty values
                found[key] = None
    return tuple([_first(found, k) if isinstance(k, tuple) else found.get(k) for k in keys])


def _events(
    events: Any, names: frozenset[str], keys: tuple[Any, ...], wanted: frozenset[str], limit: int
) -> tuple[tuple[Any, ...], ...]:
    """The first `limit` events whose name is in `names`, each (name, v_0, ..., v_{k-1})."""
    out: list[tuple[Any, ...]] = []
    no_arrays: frozenset[str] = frozenset()
    for event in events:
        if event.name in names:
            out.append((event.name, *_pick(event.attributes, keys, wanted, no_arrays, 0)))
            if len(out) >= limit:
                break
    return tuple(out)


def _first(found: dict[str, object], group: tuple[str, ...]) -> object:
    """The value of the group's first key that has one (a key's last occurrence counts; an array
    key's empty array is a value)."""
    for key in group:
        value = found.get(key)
        if value is not None:
            return value
    return None


def _flat(keys: tuple[Any, ...]) -> frozenset[str]:
    return frozenset(k for e in keys for k in (e if isinstance(e, tuple) else (e,)))


class PyScanner:
    """Reference scanner: protobuf parse, then read the fields from Python."""

    __slots__ = (
        "_array_limit",
        "_array_set",
        "_event_limit",
        "_event_set",
        "_name_set",
        "_resource_set",
        "_span_set",
        "array_keys",
        "event_keys",
        "event_names",
        "max_array_items",
        "max_events",
        "max_spans",
        "resource_keys",
        "span_keys",
    )

    def __init__(
        self,
        span_keys: Sequence[str | Sequence[str]],
        resource_keys: Sequence[str | Sequence[str]],
        max_spans: int = 0,
        max_array_items: int = 64,
        array_keys: Collection[str] = (),
        *,
        event_names: Sequence[str] = (),
        event_keys: Sequence[str | Sequence[str]] = (),
        max_events: int = 16,
    ) -> None:
        self.max_spans = _check_max_spans(max_spans)
        self.max_array_items = _check_max_array_items(max_array_items)
        # one element more than max_array_items tells the caller the array was cut
        self._array_limit = max_array_items + 1 if max_array_items else 0
        self.span_keys = _check_keys(span_keys, "span_keys")
        self.resource_keys = _check_keys(resource_keys, "resource_keys")
        self._span_set = _flat(self.span_keys)
        self._resource_set = _flat(self.resource_keys)
        self.array_keys = _check_array_keys(array_keys, self._span_set)
        self._array_set = frozenset(self.array_keys)
        self.max_events = _check_max_events(max_events)
        self._event_limit = max_events + 1  # one more tells the caller the list was cut
        self.event_names = _check_event_names(event_names)
        self._name_set = frozenset(self.event_names)
        self.event_keys = _check_keys(event_keys, "event_keys")
        self._event_set = _flat(self.event_keys)

    def scan(self, data: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Returns (resources, spans)."""
        if not isinstance(data, bytes):
            data = memoryview(data).tobytes()
        max_spans = self.max_spans
        if max_spans:
            _refuse_too_many(data, max_spans)  # protobuf's own parse would cost ~170 bytes a span
        try:
            request = ExportTraceServiceRequest.FromString(data)
        except DecodeError as exc:
            raise ScanError(_diagnose(data) or f"protobuf rejected the payload: {exc}") from exc
        span_keys, span_set = self.span_keys, self._span_set
        resource_keys, resource_set = self.resource_keys, self._resource_set
        array_limit, arrays = self._array_limit, self._array_set
        no_arrays: frozenset[str] = frozenset()
        names = self._name_set
        event_keys, event_set, event_limit = self.event_keys, self._event_set, self._event_limit
        resources: list[tuple[Any, ...]] = []
        spans: list[tuple[Any, ...]] = []
        for rs in request.resource_spans:
            index = len(resources)
            if max_spans and index >= max_spans:
                raise TooManySpans(f"more than {max_spans} resource_spans in one request")
            resources.append(_pick(rs.resource.attributes, resource_keys, resource_set, no_arrays, 0))
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if max_spans and len(spans) >= max_spans:
                        raise TooManySpans(f"more than {max_spans} spans in one request")
                    row = (
                        index,
                        span.kind,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        span.trace_id,
                        span.span_id,
                        span.trace_state,
                        span.status.code,
                    ) + _pick(span.attributes, span_keys, span_set, arrays, array_limit)
                    if names:
                        row += (_events(span.events, names, event_keys, event_set, event_limit),)
                    spans.append(row)
        return resources, spans


# ---------------------------------------------------------------------------
# Error location for PyScanner.  protobuf only says "Error parsing message";
# this walks the wire format the way the C scanner does (same messages) to say
# what is wrong and where.  Only runs after protobuf has rejected a payload.

_MAX_DEPTH = 100  # upb's default recursion limit
_GROUP_STACK_MAX = 1024  # as in _cscan.c


def _label(desc: Any, num: int) -> str:
    if num == 0:
        return str(desc.name)
    field = desc.fields_by_number.get(num)
    if field is not None:
        return f"{desc.name}.{field.name}"
    return f"{desc.name} field {num}"


def _varint(buf: bytes, p: int, end: int) -> tuple[int | None, int, str]:
    """(value, new position, "") or (None, p, problem)."""
    value = 0
    for i in range(10):
        if p + i >= end:
            return None, p, "truncated"
        b = buf[p + i]
        value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, p + i + 1, ""
    return None, p, "too long"


def _tag(buf: bytes, p: int, end: int, where: str, in_group: bool = False) -> tuple[int, int]:
    tag, q, problem = _varint(buf, p, end)
    if tag is None:
        what = "truncated tag" if problem == "truncated" else "invalid tag"
        raise ScanError(f"{what} ({where}) at byte {p}")
    if q - p > 5 or tag > 0xFFFFFFFF:
        raise ScanError(f"invalid tag ({where}) at byte {p}")
    if tag >> 3 == 0 and not in_group:  # upb accepts field number 0 inside groups
        raise ScanError(f"invalid field number 0 ({where}) at byte {p}")
    return tag, q


def _skip_scalar(buf: bytes, tp: int, p: int, end: int, wire_type: int, label: str) -> int:
    """Skip a wire type 0/1/2/5 value; return the position after it."""
    if wire_type == 0:
        value, q, problem = _varint(buf, p, end)
        if value is None:
            what = "truncated varint" if problem == "truncated" else "varint longer than 10 bytes"
            raise ScanError(f"{what} ({label}) at byte {tp}")
        return q
    if wire_type == 1:
        if end - p < 8:
            raise ScanError(f"truncated fixed64 field ({label}) at byte {tp}")
        return p + 8
    if wire_type == 5:
        if end - p < 4:
            raise ScanError(f"truncated fixed32 field ({label}) at byte {tp}")
        return p + 4
    length, q, problem = _varint(buf, p, end)
    if length is None:
        what = "truncated length-delimited field" if problem == "truncated" else "varint longer than 10 bytes"
        raise ScanError(f"{what} ({label}) at byte {tp}")
    if length > end - q:
        raise ScanError(f"truncated length-delimited field ({label}) at byte {tp}")
    return q + length


def _skip_group(buf: bytes, tp: int, p: int, end: int, num: int, label: str) -> int:
    stack = [num]
    while stack:
        if p >= end:
            raise ScanError(f"unterminated group ({label}) at byte {tp}")
        itp = p
        tag, p = _tag(buf, p, end, label, in_group=True)
        inner, wire_type = tag >> 3, tag & 7
        if wire_type == 3:
            if len(stack) >= _GROUP_STACK_MAX:
                raise ScanError(f"groups nested too deeply ({label}) at byte {itp}")
            stack.append(inner)
        elif wire_type == 4:
            if stack[-1] != inner:
                raise ScanError(f"mismatched end-group tag ({label}) at byte {itp}")
            stack.pop()
        elif wire_type in (0, 1, 2, 5):
            p = _skip_scalar(buf, itp, p, end, wire_type, label)
        else:
            raise ScanError(f"invalid wire type {wire_type} ({label}) at byte {itp}")
    return p


def _walk(buf: bytes, p: int, end: int, desc: Any, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ScanError(f"messages nested too deeply ({desc.name}) at byte {p}")
    while p < end:
        tp = p
        tag, p = _tag(buf, p, end, desc.name)
        num, wire_type = tag >> 3, tag & 7
        label = _label(desc, num)
        if wire_type == 3:
            p = _skip_group(buf, tp, p, end, num, label)
        elif wire_type == 4:
            raise ScanError(f"unexpected end-group tag ({label}) at byte {tp}")
        elif wire_type in (0, 1, 5):
            p = _skip_scalar(buf, tp, p, end, wire_type, label)
        elif wire_type == 2:
            q = _skip_scalar(buf, tp, p, end, 2, label)
            start = _varint(buf, p, end)[1]  # first payload byte
            field = desc.fields_by_number.get(num)
            if field is not None and field.type == FieldDescriptor.TYPE_MESSAGE:
                _walk(buf, start, q, field.message_type, depth + 1)
            elif field is not None and field.type == FieldDescriptor.TYPE_STRING:
                try:
                    buf[start:q].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ScanError(f"invalid UTF-8 ({label}) at byte {start + exc.start}") from None
            p = q
        else:
            raise ScanError(f"invalid wire type {wire_type} ({label}) at byte {tp}")


def _fields(buf: bytes, p: int, end: int, num: int, where: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each length-delimited field `num` in buf[p:end]; ScanError where malformed."""
    wanted = num << 3 | 2
    while p < end:
        tp = p
        if buf[p] == wanted and wanted < 0x80:  # the usual case inline: a third of the general path's cost
            n = shift = 0
            for q in range(p + 1, min(p + 11, end)):
                b = buf[q]
                n |= (b & 0x7F) << shift
                if b < 0x80:
                    if n <= end - q - 1:
                        yield q + 1, q + 1 + n
                        p = q + 1 + n
                        break
                    raise ScanError("truncated")  # stops the walk: protobuf reports it
                shift += 7
            else:
                raise ScanError("bad length")
            continue
        tag, p = _tag(buf, p, end, where)
        wire_type = tag & 7
        if wire_type == 3:
            p = _skip_group(buf, tp, p, end, tag >> 3, where)
        elif wire_type in (0, 1, 2, 5):
            q = _skip_scalar(buf, tp, p, end, wire_type, where)
            if wire_type == 2 and tag >> 3 == num:
                yield _varint(buf, p, end)[1], q
            p = q
        else:
            raise ScanError(f"wire type {wire_type} ({where}) at byte {tp}")


def _refuse_too_many(data: bytes, max_spans: int) -> None:
    """Raise TooManySpans as PyScanner.scan would, walking only as far as the first bound reached.

    Stops silently at anything malformed: protobuf's parse then reports it.
    """
    resources = spans = 0
    try:
        for rs, rs_end in _fields(data, 0, len(data), 1, "ExportTraceServiceRequest"):
            if resources >= max_spans:
                raise TooManySpans(f"more than {max_spans} resource_spans in one request")
            resources += 1
            for ss, ss_end in _fields(data, rs, rs_end, 2, "ResourceSpans"):
                for _ in _fields(data, ss, ss_end, 2, "ScopeSpans"):
                    if spans >= max_spans:
                        raise TooManySpans(f"more than {max_spans} spans in one request")
                    spans += 1
    except TooManySpans:
        raise
    except ScanError:
        pass


def _diagnose(data: bytes) -> str | None:
    """Describe the first wire-format problem in data, or None if none is found."""
    try:
        _walk(data, 0, len(data), ExportTraceServiceRequest.DESCRIPTOR, 0)
    except ScanError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------------
# Implementation choice


def _load_c_scanner() -> tuple[type | None, str]:
    try:
        from apiusage.processor.receivers import _cscan
    except ImportError as exc:
        return None, str(exc)
    _cscan._set_error_class(ScanError, TooManySpans)
    return _cscan.Scanner, ""


#: The C scanner class, or None when the extension is not importable
#: (``C_IMPORT_ERROR`` says why).  Available even with APIUSAGE_PURE_PYTHON=1.
CScanner, C_IMPORT_ERROR = _load_c_scanner()

if CScanner is not None and os.environ.get("APIUSAGE_PURE_PYTHON") != "1":
    Scanner: Any = CScanner
    IMPLEMENTATION = "c"
else:
    Scanner = PyScanner
    IMPLEMENTATION = "python"
