"""Scanner over field groups: each field is read from the first of its attribute keys present."""

from __future__ import annotations

import operator
from collections.abc import Collection, Sequence
from typing import Any

from . import scan

__all__ = ["FieldScanner"]

_FIXED = 8  # resource_index, kind, start, end, trace_id, span_id, trace_state, status_code


class FieldScanner:
    """`scan(body)` → (resources, spans) with one value per field group, in group order.

    The scanner resolves the groups itself.  Only when one key feeds two fields
    (a config that names it twice) do the fields get resolved here, in Python.
    ``max_spans`` > 0: `scan` raises ``scan.TooManySpans`` for a body of more spans.
    ``array_fields`` holds the indexes in ``span_fields`` of the groups whose values
    are arrays: their keys are the scanner's ``array_keys``, so such a field is a tuple
    of at most ``max_array_items + 1`` elements (or a scalar sent in its place; see
    scan.py), and every other field takes no array value (its group's next key is tried).
    ``event_names`` non-empty: each span tuple ends with the span's events of those names, each
    ``(name, v_0, ...)`` with one value per ``event_keys`` group, at most ``max_events + 1`` of
    them (see scan.py); it passes through as the scanner returns it.
    """

    def __init__(
        self,
        span_fields: Sequence[Sequence[str]],
        resource_fields: Sequence[Sequence[str]],
        max_spans: int = 0,
        max_array_items: int = 64,
        array_fields: Collection[int] = (),
        *,
        event_names: Sequence[str] = (),
        event_keys: Sequence[Sequence[str]] = (),
        max_events: int = 16,
    ) -> None:
        self.implementation = scan.IMPLEMENTATION
        # only when the fields are resolved here: (key indexes, scalar field?) per span field
        self._span_index: list[tuple[tuple[int, ...], bool]] | None = None
        arrays = _check_array_fields(array_fields, len(span_fields))
        array_keys = list(dict.fromkeys(k for i in sorted(arrays) for k in span_fields[i]))
        events = {
            "event_names": tuple(event_names),
            "event_keys": [tuple(g) for g in event_keys],
            "max_events": max_events,
        }
        self._events = bool(events["event_names"])
        try:
            self._scanner = scan.Scanner(
                [tuple(g) for g in span_fields],
                [tuple(g) for g in resource_fields],
                max_spans=max_spans,
                max_array_items=max_array_items,
                array_keys=array_keys,
                **events,
            )
            return
        except ValueError:
            pass  # a key in two groups (a bad max_spans or max_array_items raises again below)
        span_keys = list(dict.fromkeys(k for group in span_fields for k in group))
        resource_keys = list(dict.fromkeys(k for group in resource_fields for k in group))
        self._scanner = scan.Scanner(
            span_keys,
            resource_keys,
            max_spans=max_spans,
            max_array_items=max_array_items,
            array_keys=array_keys,
            **events,
        )
        # a key of an array field that also feeds a scalar field: its tuple is absent there
        self._span_index = [
            (tuple(span_keys.index(k) for k in g), i not in arrays) for i, g in enumerate(span_fields)
        ]
        self._resource_index = [tuple(resource_keys.index(k) for k in g) for g in resource_fields]

    def scan(self, body: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        resources, spans = self._scanner.scan(body)
        if self._span_index is None:
            return resources, spans
        resources = [tuple(_first(r, g, 0, False) for g in self._resource_index) for r in resources]
        groups = self._span_index
        tail = slice(-1, None) if self._events else slice(0, 0)  # the events element, if any
        spans = [
            s[:_FIXED] + tuple(_first(s, g, _FIXED, scalar) for g, scalar in groups) + s[tail] for s in spans
        ]
        return resources, spans


def _check_array_fields(array_fields: Collection[int], n: int) -> frozenset[int]:
    """Indexes in span_fields (0 .. n-1)."""
    if isinstance(array_fields, (str, bytes, bytearray)):
        raise TypeError(f"array_fields must be a collection of int, not {type(array_fields).__name__}")
    indexes = []
    for i in array_fields:
        if isinstance(i, bool):
            raise TypeError("array_fields must contain int, not bool")
        i = operator.index(i)
        if not 0 <= i < n:
            raise ValueError(f"array_fields: {i} is not the index of one of the {n} span_fields")
        indexes.append(i)
    return frozenset(indexes)


def _first(values: tuple[Any, ...], indexes: tuple[int, ...], offset: int, scalar: bool) -> object:
    for i in indexes:
        v = values[offset + i]
        if v is not None and not (scalar and isinstance(v, tuple)):
            return v
    return None
