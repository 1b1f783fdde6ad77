"""Client name and version from a User-Agent, for spans without `apiusage.client.*`."""

from __future__ import annotations

import re

__all__ = ["parse_user_agent"]

_CACHE_LIMIT = 5_000
_MAX_CACHED_LENGTH = 2048
_PRODUCT = re.compile(r"^\s*([A-Za-z][A-Za-z0-9._+-]{0,63})(?:/([0-9][A-Za-z0-9._+-]{0,31}))?")
_BROWSER_VENDORS = ("Mozilla", "Opera")
_UNKNOWN = ("unknown", "unknown")

_cache: dict[str, tuple[str, str]] = {}


def parse_user_agent(user_agent: object) -> tuple[str, str]:
    """`orders-sdk/1.2.3 (python 3.11)` → ('orders-sdk', '1.2.3'); browsers → ('browser', major)."""
    if not isinstance(user_agent, str):
        return _UNKNOWN
    cached = _cache.get(user_agent)
    if cached is not None:
        return cached
    m = _PRODUCT.match(user_agent)
    if m is None:
        result = _UNKNOWN
    elif m.group(1) in _BROWSER_VENDORS:
        # Every browser starts with Mozilla/5.0: the product token says nothing, so the
        # label would be misleading. Browsers are one client for API usage purposes.
        result = ("browser", "unknown")
    else:
        result = (m.group(1).lower(), m.group(2) or "unknown")
    if len(user_agent) <= _MAX_CACHED_LENGTH:  # a cache of 1 MiB keys would hold gigabytes
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[user_agent] = result
    return result
