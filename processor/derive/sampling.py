"""Adjusted counts for sampled spans, from the W3C `tracestate` OpenTelemetry entry.

OpenTelemetry probability sampling writes `ot=th:<hex>` into tracestate: the
rejection threshold T (up to 14 hex digits, right-padded with zeros) of a
56-bit random value, so a span was kept with probability p = 1 - T / 2**56 and
stands for 1/p spans.  The older experimental `ot=p:<n>` form means p = 2**-n.
A span without either was either not sampled or sampled in a way we cannot
see; it counts as 1 (see docs/metrics.md on head sampling).
"""

from __future__ import annotations

__all__ = ["adjusted_count"]

_MAX_THRESHOLD = 1 << 56
_CACHE_LIMIT = 1_000
_cache: dict[str, float] = {}


def _from_ot_value(ot: str) -> float:
    for field in ot.split(";"):
        key, _, value = field.partition(":")
        if key == "th":
            if not 1 <= len(value) <= 14:
                return 1.0
            try:
                threshold = int(value.ljust(14, "0"), 16)
            except ValueError:
                return 1.0
            return _MAX_THRESHOLD / (_MAX_THRESHOLD - threshold)
        if key == "p":
            if value.isdigit() and int(value) <= 62:
                return float(1 << int(value))
            return 1.0
    return 1.0


def adjusted_count(tracestate: str) -> float:
    """How many spans this sampled span represents (1.0 when tracestate says nothing)."""
    cached = _cache.get(tracestate)
    if cached is not None:
        return cached
    weight = 1.0
    for member in tracestate.split(","):
        key, _, value = member.strip().partition("=")
        if key == "ot":
            weight = _from_ot_value(value)
            break
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[tracestate] = weight
    return weight
