"""Adjusted counts for sampled spans, from the W3C `tracestate` OpenTelemetry entry.

OpenTelemetry probability sampling writes `ot=th:<hex>` into tracestate: the
rejection threshold T (up to 14 hex digits, right-padded with zeros) of a
56-bit random value, so a span was kept with probability p = 1 - T / 2**56 and
stands for 1/p spans.  The older experimental `ot=p:<n>` form means p = 2**-n.
A span without either, or with a value that is not well formed, was either not
sampled or sampled in a way we cannot see; it counts as 1 (see docs/metrics.md
on head sampling).  Counts above MAX_ADJUSTED_COUNT are implausible: the Deriver
caps them there and counts a data-quality issue.
"""

from __future__ import annotations

__all__ = ["adjusted_count", "MAX_ADJUSTED_COUNT"]

# One span standing for more than ~a million requests is a bug or an attack, not a sampler:
# unbounded, a single `ot=p:62` would add 4.6e18 and freeze the counter for normal traffic.
MAX_ADJUSTED_COUNT = float(1 << 20)
_MAX_THRESHOLD = 1 << 56
_CACHE_LIMIT = 1_000
# W3C caps a tracestate at 512 characters; longer ones are computed but never cached.
_MAX_CACHED_LENGTH = 512
# W3C: at most 32 list members, and a member's value at most 256 characters. Only that much is
# looked at, so a hostile 8 MiB tracestate of commas or `th:1;` costs microseconds, not a second.
_MAX_MEMBERS = 32
_MAX_VALUE_LENGTH = 256
_HEX = frozenset("0123456789abcdefABCDEF")
_cache: dict[str, float] = {}


def _from_ot_value(ot: str) -> float:
    if len(ot) > _MAX_VALUE_LENGTH:
        return 1.0  # not a valid value: counted once rather than guessed
    for field in ot.split(";"):
        key, _, value = field.partition(":")
        if key == "th":
            # int(x, 16) would also take "0x", "_" and blanks: check the digits ourselves.
            if not 1 <= len(value) <= 14 or not _HEX.issuperset(value):
                return 1.0
            threshold = int(value.ljust(14, "0"), 16)
            return _MAX_THRESHOLD / (_MAX_THRESHOLD - threshold)
        if key == "p":
            # str.isdigit() is also true for "²" or "٣": only ASCII digits are a valid p.
            if 1 <= len(value) <= 2 and value.isascii() and value.isdigit() and int(value) <= 62:
                return float(1 << int(value))
            return 1.0
    return 1.0


def adjusted_count(tracestate: str) -> float:
    """How many spans this sampled span represents (1.0 when tracestate says nothing valid)."""
    cached = _cache.get(tracestate)
    if cached is not None:
        return cached
    weight = 1.0
    members = tracestate.split(",", _MAX_MEMBERS)  # the 33rd piece, if any, is the unsplit rest
    for member in members[:_MAX_MEMBERS]:
        key, _, value = member.strip().partition("=")
        if key == "ot":
            weight = _from_ot_value(value)
            break
    if len(tracestate) <= _MAX_CACHED_LENGTH:
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[tracestate] = weight
    return weight
