"""Deprecation response headers: ``Deprecation`` (RFC 9745), ``Sunset`` (RFC 8594), ``Link`` (RFC 8288)."""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from collections.abc import Mapping
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from apiusage.conventions.catalog import Endpoint

_TEMPLATE_PARAM = re.compile(r"\{([^{}:]+)(?::([^{}]+))?\}")


def deprecation_value(since: _dt.date | None) -> str:
    """RFC 9745 ``Deprecation`` value: a Structured Field Date, ``@<unix seconds>``.

    RFC 9745 only allows a date. For an endpoint marked deprecated without one
    (FastAPI's ``deprecated=True``) we send ``@0``: a date in the past, which per the
    RFC means "has been deprecated", the only fact we know.
    """
    if since is None:
        return "@0"
    return f"@{calendar.timegm(since.timetuple())}"


def sunset_value(day: _dt.date) -> str:
    """RFC 8594 ``Sunset`` value: an IMF-fixdate at the start of that day, UTC."""
    moment = _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc)
    return format_datetime(moment, usegmt=True)


def link_value(target: str, rel: str) -> str:
    """One RFC 8288 link-value."""
    return f'<{target}>; rel="{rel}"'


def expand_target(target: str, path_params: Mapping[str, Any], root_path: str = "") -> str | None:
    """Fill a replacement route template with this request's path parameters.

    ``/v2/orders/{order_id}`` with ``order_id=42`` becomes ``/v2/orders/42``; a
    relative path gets the app's ``root_path``. None when a parameter is missing,
    because a URI template is not a URI-reference a client could follow.
    """
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        name, convertor = match.group(1), match.group(2)
        if name not in path_params:
            missing = True
            return ""
        return quote(str(path_params[name]), safe="/" if convertor == "path" else "")

    expanded = _TEMPLATE_PARAM.sub(fill, target)
    if missing:
        return None
    if expanded.startswith("/"):
        expanded = root_path.rstrip("/") + expanded
    return expanded


class _Target:
    """A replacement route template, split once into literal text and parameters.

    ``expand()`` gives what :func:`expand_target` gives, without a regex pass per request.
    """

    __slots__ = ("parts", "tail")

    def __init__(self, template: str) -> None:
        parts = []
        position = 0
        for match in _TEMPLATE_PARAM.finditer(template):
            parts.append((template[position : match.start()], match.group(1), match.group(2) == "path"))
            position = match.end()
        self.parts = tuple(parts)
        self.tail = template[position:]

    def expand(self, path_params: Mapping[str, Any], root_path: str = "") -> str | None:
        pieces = []
        for literal, name, is_path in self.parts:
            if name not in path_params:
                return None
            value = str(path_params[name])
            if not (value.isascii() and value.isalnum()):  # letters and digits need no quoting
                value = quote(value, safe="/" if is_path else "")
            pieces.append(literal)
            pieces.append(value)
        pieces.append(self.tail)
        expanded = "".join(pieces)
        if expanded.startswith("/"):
            expanded = root_path.rstrip("/") + expanded
        return expanded


class DeprecationHeaders:
    """The headers one catalog entry calls for, pre-encoded; only the Link may vary."""

    __slots__ = ("static", "doc_link", "replacement", "_target", "_fixed", "_link_tail")

    def __init__(self, endpoint: Endpoint) -> None:
        static: list[tuple[bytes, bytes]] = []
        if endpoint.deprecated:
            static.append((b"deprecation", deprecation_value(endpoint.deprecated_since).encode()))
        if endpoint.sunset is not None:
            static.append((b"sunset", sunset_value(endpoint.sunset).encode("latin-1")))
        self.static = tuple(static)
        self.doc_link: str | None = None
        if endpoint.link:
            rel = "deprecation" if endpoint.deprecated else "sunset"
            self.doc_link = link_value(endpoint.link, rel)
        self.replacement = endpoint.replacement_target
        self._target = _Target(self.replacement) if self.replacement else None
        # The lines when no successor link can be given (none configured, or a path
        # parameter missing); with one, only its target depends on the request.
        self._fixed = self._lines(None)
        self._link_tail = f", {self.doc_link}" if self.doc_link else ""

    def __bool__(self) -> bool:
        return bool(self.static or self.doc_link or self.replacement)

    def for_request(self, scope: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
        """Header lines to append to this request's response."""
        if self._target is not None:
            target = self._target.expand(scope.get("path_params") or {}, scope.get("root_path", ""))
            if target is not None:  # as _lines(target), without the general case's lists
                link = link_value(target, "successor-version") + self._link_tail
                return [*self.static, (b"link", link.encode("latin-1"))]
        return list(self._fixed)

    def _lines(self, target: str | None) -> list[tuple[bytes, bytes]]:
        headers = list(self.static)
        links = []
        if target is not None:
            links.append(link_value(target, "successor-version"))
        if self.doc_link:
            links.append(self.doc_link)
        if links:
            headers.append((b"link", ", ".join(links).encode("latin-1")))
        return headers
