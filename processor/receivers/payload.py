"""OTLP request bodies: bounded gzip inflation and OTLP/JSON → protobuf bytes."""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["InvalidPayload", "PayloadTooLarge", "inflate_gzip", "json_to_protobuf"]


class InvalidPayload(ValueError):
    """The body cannot be decoded; the message says why, for the client."""


class PayloadTooLarge(ValueError):
    """The body is over the size limit (before or after decompression)."""


def inflate_gzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than `limit` bytes (no gzip bombs)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidPayload(f"body is not valid gzip: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body is larger than the limit of {limit} bytes")
    if not inflater.eof:
        raise InvalidPayload("gzip body is truncated")
    return out


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


def json_to_protobuf(body: bytes) -> bytes:
    """Re-encode an OTLP/JSON ExportTraceServiceRequest as protobuf bytes."""
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"JSON body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise InvalidPayload(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise InvalidPayload("JSON body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidPayload("JSON body must be an object with a resourceSpans list")
    for resource_spans in _each(doc, "resourceSpans", "resource_spans"):
        for scope_spans in _each(resource_spans, "scopeSpans", "scope_spans"):
            for span in _each(scope_spans, "spans"):
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
    return message.SerializeToString()
