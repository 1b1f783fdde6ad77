"""Writing span attributes through OpenTelemetry SDK internals, with a public fallback.

This runs on every request, which is why it exists: the SDK's general-purpose validation
of attribute values costs more than the rest of the enrichment together. The other places
that read SDK internals, each guarded: the enricher reads ``http.route`` from the span's
attribute dict, and the scrubbing processor (_redact.py) deletes attributes from an ending
span's dict, since the SDK offers no way to delete one. All are covered by tests against
the real SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def set_attributes(span: Any, attributes: Mapping[str, str | int | bool]) -> None:
    """``span.set_attributes``, minus re-validation of values we built as plain str/int/bool."""
    try:
        container = span._attributes
        store = container._dict
        maxlen = container.maxlen
        direct = (
            type(store) is dict
            and not container._immutable
            and container.max_value_len is None
            and (maxlen is None or len(store) + len(attributes) <= maxlen)
        )
    except AttributeError:  # not the SDK's span, or an SDK that changed
        direct = False
    if not direct:
        # Limits to enforce, an ended span, or an unknown SDK: the public, checked path.
        span.set_attributes(attributes)
        return
    with container._lock:
        store.update(attributes)
