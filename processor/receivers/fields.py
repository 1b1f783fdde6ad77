"""Scanner over field groups: each field is read from the first of its attribute keys present."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import scan

__all__ = ["FieldScanner"]

_FIXED = 8  # resource_index, kind, start, end, trace_id, span_id, trace_state, status_code


class FieldScanner:
    """`scan(body)` → (resources, spans) with one value per field group, in group order.

    The scanner resolves the groups itself.  Only when one key feeds two fields
    (a config that names it twice) do the fields get resolved here, in Python.
    ``max_spans`` > 0: `scan` raises ``scan.TooManySpans`` for a body of more spans.
    Array values hold at most ``max_array_items + 1`` elements (see scan.py).
    """

    def __init__(
        self,
        span_fields: Sequence[Sequence[str]],
        resource_fields: Sequence[Sequence[str]],
        max_spans: int = 0,
        max_array_items: int = 64,
    ) -> None:
        self.implementation = scan.IMPLEMENTATION
        self._span_index: list[tuple[int, ...]] | None = None
        try:
            self._scanner = scan.Scanner(
                [tuple(g) for g in span_fields],
                [tuple(g) for g in resource_fields],
                max_spans=max_spans,
                max_array_items=max_array_items,
            )
            return
        except ValueError:
            pass  # a key in two groups (a bad max_spans or max_array_items raises again below)
        span_keys = list(dict.fromkeys(k for group in span_fields for k in group))
        resource_keys = list(dict.fromkeys(k for group in resource_fields for k in group))
        self._scanner = scan.Scanner(
            span_keys, resource_keys, max_spans=max_spans, max_array_items=max_array_items
        )
        self._span_index = [tuple(span_keys.index(k) for k in g) for g in span_fields]
        self._resource_index = [tuple(resource_keys.index(k) for k in g) for g in resource_fields]

    def scan(self, body: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        resources, spans = self._scanner.scan(body)
        if self._span_index is None:
            return resources, spans
        resources = [tuple(_first(r, g, 0) for g in self._resource_index) for r in resources]
        groups = self._span_index
        spans = [s[:_FIXED] + tuple(_first(s, g, _FIXED) for g in groups) for s in spans]
        return resources, spans


def _first(values: tuple[Any, ...], indexes: tuple[int, ...], offset: int) -> object:
    for i in indexes:
        v = values[offset + i]
        if v is not None:
            return v
    return None
