"""Low-cardinality route templates for spans that carry a raw path but no `http.route`.

The placeholders (`{id}`, `{uuid}`, ...) are parameter slots in the catalog's sense
(`apiusage.conventions.routes`), so `/v1/orders/123` becomes `/v1/orders/{id}` and matches a
catalog entry `/v1/orders/:order_id`. A segment that a template would read as a slot (`:x`,
`*`, brackets) becomes `{value}`: the label's only slots are the placeholders it shows.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from apiusage.conventions.routes import route_key

from .series import OVERFLOW_VALUE

__all__ = ["PLACEHOLDER_ROUTES", "UNKNOWN_ROUTE", "catalog_key", "normalize_path"]

#: The route label of a span with neither a route nor a path.
UNKNOWN_ROUTE = "unknown"
#: Route labels the processor writes itself; they name no endpoint, so no catalog entry matches
#: them (a key would make `unknown` the route `/unknown`).
PLACEHOLDER_ROUTES = frozenset((UNKNOWN_ROUTE, OVERFLOW_VALUE))

_MAX_SEGMENTS = 8
_CACHE_LIMIT = 10_000
_MAX_CACHED_LENGTH = 2048
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{12,}$")
_NUMBER = re.compile(r"^[+-]?\d+(?:[.,]\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ][\d:.]+Z?)?$")
# An identifier-looking token: long and mixes digits with letters (ord_8f7a6b5c, a1b2c3d4e5).
_TOKEN = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-.~=+]{10,}$")
# Template syntax in a raw segment (conventions/routes.py): brackets, wildcards, `:name` or
# Express 5's `:"name"` at the start or after `-`/`.`. `/v1/things:batchGet` stays text, as it
# does in a template.
_SLOT_SYNTAX = re.compile(r'[{}<>()*]|(?:^|[-.]):[A-Za-z_"]')

_cache: dict[str, str] = {}


def _segment(seg: str) -> str:
    if not seg:
        return seg
    if _NUMBER.match(seg):
        return "{id}"
    if _UUID.match(seg):
        return "{uuid}"
    if _HEX.match(seg):
        return "{hex}"
    if _DATE.match(seg):
        return "{date}"
    if "@" in seg or "%40" in seg:
        return "{email}"
    if _TOKEN.match(seg):
        return "{id}"
    if len(seg) > 40 or _SLOT_SYNTAX.search(seg):
        return "{value}"
    return seg


def normalize_path(path: object) -> str:
    """A template for a raw path: ids, numbers, UUIDs, hashes and emails become placeholders.

    Accepts a path, a path with a query (`http.target`) or a full URL
    (`http.url`); the query and fragment are always dropped.
    """
    if not isinstance(path, str) or not path:
        return UNKNOWN_ROUTE
    cached = _cache.get(path)
    if cached is not None:
        return cached
    raw = path
    if "://" in path:
        try:
            path = urlsplit(path).path
        except ValueError:
            path = ""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    segments = path.split("/")[1:]
    tail = len(segments) > _MAX_SEGMENTS
    out = "/" + "/".join(_segment(s) for s in segments[:_MAX_SEGMENTS])
    if tail:
        out += "/{rest}"
    if len(raw) <= _MAX_CACHED_LENGTH:  # a cache of 1 MiB keys would hold gigabytes
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()  # paths are unbounded input; a full reset beats unbounded memory
        _cache[raw] = out
    return out


def catalog_key(route: object) -> str | None:
    """The key of a route label for catalog matching (see route_key); None for a placeholder."""
    return None if route in PLACEHOLDER_ROUTES else route_key(route)
