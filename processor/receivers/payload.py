"""OTLP request bodies: bounded gzip inflation and OTLP/JSON → protobuf bytes."""

from __future__ import annotations

import base64
import json
import sys
import zlib
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..errors import ProcessorError

__all__ = ["InvalidPayload", "PayloadTooLarge", "inflate_gzip", "json_to_protobuf"]


class InvalidPayload(ProcessorError, ValueError):
    """The body cannot be decoded; the message says why, for the client."""


class PayloadTooLarge(ProcessorError, ValueError):
    """The body is over the size limit (before or after decompression)."""


def inflate_gzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than `limit` bytes (no gzip bombs)."""
    parts: list[bytes] = []
    total = 0
    rest = body
    # A gzip file may hold several members one after the other (RFC 1952 2.2); each is inflated,
    # and the limit is on their sum.
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out = inflater.decompress(rest, limit - total + 1)
        except zlib.error as exc:
            raise InvalidPayload(f"body is not valid gzip: {exc}") from None
        total += len(out)
        if total > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body is larger than the limit of {limit} bytes")
        if not inflater.eof:
            raise InvalidPayload("gzip body is truncated")
        parts.append(out)
        rest = inflater.unused_data
        if not rest:
            return b"".join(parts)


# OTLP/JSON carries ids as hex; protobuf's JSON mapping expects base64 for bytes fields.
_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(obj: dict[str, Any]) -> None:
    for name in _ID_FIELDS:
        value = obj.get(name)
        if value is None:
            continue
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b"\x00"
        except ValueError:
            raw = b"\x00"  # unusable id: the span is rejected by id validation, not the request
        obj[name] = base64.b64encode(raw).decode("ascii")


def _each(obj: Any, *keys: str) -> list[Any]:
    for key in keys:
        value = obj.get(key) if isinstance(obj, dict) else None
        if value is not None:
            return value if isinstance(value, list) else []
    return []


# JSON objects allowed per span of the request's span bound, before the body is parsed: a span
# with 30 attributes is about 60 objects, and `{}` is 2 bytes that json.loads makes ~100 bytes of.
_OBJECTS_PER_SPAN = 64


def load_json(body: bytes, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """`json.loads`, every way it refuses a body turned into an InvalidPayload that says why (an
    InvalidPayload from `object_pairs_hook` passes as it is)."""
    try:
        return json.loads(body, object_pairs_hook=object_pairs_hook)
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
        # int() refuses more than sys.get_int_max_str_digits() (4300) digits: a JSON number that long
        # is no OTLP value.
        raise InvalidPayload(
            f"JSON body has an integer of more than {sys.get_int_max_str_digits()} digits"
        ) from None


def json_to_protobuf(body: bytes, max_spans: int = 0) -> bytes:
    """Re-encode an OTLP/JSON ExportTraceServiceRequest as protobuf bytes.

    With `max_spans`, a body with more spans is PayloadTooLarge; so is one with more JSON objects
    than such a request could hold, found by counting braces before anything is built."""
    objects = _OBJECTS_PER_SPAN * max_spans + 1024
    if max_spans and body.count(b"{") > objects:
        raise PayloadTooLarge(
            f"JSON body has more than {objects} objects, more than {max_spans} spans "
            "could hold (receivers.otlp.max_spans_per_request)"
        )
    doc = load_json(body)
    if not isinstance(doc, dict):
        raise InvalidPayload("JSON body must be an object with a resourceSpans list")
    spans = 0
    for resource_spans in _each(doc, "resourceSpans", "resource_spans"):
        for scope_spans in _each(resource_spans, "scopeSpans", "scope_spans"):
            found = _each(scope_spans, "spans")
            spans += len(found)
            if max_spans and spans > max_spans:
                # Before ParseDict, which would build every span as a message.
                raise PayloadTooLarge(
                    f"more than {max_spans} spans in one request; send smaller batches "
                    "(the limit is receivers.otlp.max_spans_per_request)"
                )
            for span in found:
                if not isinstance(span, dict):
                    continue
                _hex_ids_to_base64(span)
                for link in _each(span, "links"):
                    if isinstance(link, dict):
                        _hex_ids_to_base64(link)
    try:
        message = json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise InvalidPayload(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    except SystemError as exc:
        # upb looks a field up by a name that cannot be UTF-8 (a key escaped as a lone surrogate,
        # "\ud800") and reports the UnicodeEncodeError as a SystemError.
        if isinstance(exc.__context__ or exc.__cause__, UnicodeEncodeError):
            raise InvalidPayload(
                "JSON body has a key that is a lone UTF-16 surrogate (such as \\ud800), "
                "which is not Unicode text"
            ) from None
        raise
    return message.SerializeToString()
