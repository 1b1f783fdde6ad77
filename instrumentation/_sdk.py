"""The two places we reach into OpenTelemetry SDK internals, each with a public fallback.

Both run on every request, which is why they exist: the SDK offers no way to delete an
attribute, and its general-purpose validation of attribute values costs more than the
rest of the enrichment together. Both are covered by tests against the real SDK.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def set_attributes(span: Any, attributes: Mapping[str, str | int | bool]) -> None:
    """``span.set_attributes``, minus re-validation of values we built as plain str/int/bool."""
    container = getattr(span, "_attributes", None)
    store = getattr(container, "_dict", None)
    maxlen = getattr(container, "maxlen", 0)
    if (
        type(store) is not dict
        or getattr(container, "_immutable", True)
        or getattr(container, "max_value_len", None) is not None
        or (maxlen is not None and len(store) + len(attributes) > maxlen)
    ):
        # Limits to enforce, an ended span, or an unknown SDK: the public, checked path.
        span.set_attributes(attributes)
        return
    with container._lock:
        store.update(attributes)


def edit_frozen(container: Any, drop: Iterable[str], rewrite: Mapping[str, str]) -> None:
    """Delete and rewrite keys of an ending span's attributes, which the SDK has frozen.

    ``Span.end()`` freezes the container before calling ``_on_ending``; editing its dict
    under its lock is far cheaper than building a new container on every request.
    """
    with container._lock:
        for key in drop:
            container._dict.pop(key, None)
        container._dict.update(rewrite)
