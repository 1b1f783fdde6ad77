"""The endpoint catalog: which endpoints are deprecated, when they sunset, what replaces them.

The same YAML file is read by the instrumentation (to tag spans and add
``Deprecation``/``Sunset``/``Link`` response headers) and by the processor (its
top-level ``catalog:`` config key names the file), through this one model. Like the rest
of ``apiusage.conventions`` it imports nothing but PyYAML and the standard library: the
processor uses it without pulling OpenTelemetry in. ``apiusage.instrumentation`` re-exports
its public names.

Routes are compared by their parameter slots (``apiusage.conventions.routes``), so an entry
``GET /v1/reports/:id`` matches spans whose ``http.route`` is ``/v1/reports/{report_id}``.

Format (see ``docs/catalog.md``)::

    services:
      orders-api:
        endpoints:
          - method: DELETE
            route: /v1/orders/{order_id}
            deprecated: 2026-09-01        # true, or the date it was deprecated
            sunset: 2027-01-31
            replacement: DELETE /v2/orders/{order_id}
            feature: orders
            link: https://docs.example.com/migrate-to-v2
            parameters:                   # declared names (OpenAPI), for unused parameters
              query: [limit, cursor]
              body: [items, items.quantity]
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import yaml

from ._yaml import DocumentParser, load_file
from ._yaml import describe as _kind
from .errors import ConventionsError
from .routes import RouteTemplateError, parse_route, route_key

__all__ = [
    "Catalog",
    "CatalogError",
    "Endpoint",
    "HTTP_METHODS",
    "PARAMETER_LOCATIONS",
    "ServiceCatalog",
    "dump_catalog",
    "load_catalog",
    "merge_endpoint",
    "parse_catalog",
    "route_key",
]

#: Methods an endpoint may name; ``*`` matches any method of the route.
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*"}
)

_ENDPOINT_KEYS = ("method", "route", "deprecated", "sunset", "replacement", "feature", "link", "parameters")
#: Where a declared parameter is sent: the query string, or a JSON request body field.
PARAMETER_LOCATIONS = ("query", "body")
#: Bounds on declared names: a catalog is read at start-up, so it must not take unbounded memory.
MAX_PARAMETER_NAMES = 1000  # per endpoint and location
MAX_PARAMETER_NAME_LENGTH = 256
_REPLACEMENT = re.compile(r"^(?:(?P<method>[A-Za-z]+) +)?(?P<target>\S+)$")


class CatalogError(ConventionsError, ValueError):
    """A catalog that cannot be used; the message names the file and the key path."""


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a service, as the catalog describes it."""

    method: str
    route: str
    deprecated: bool = False
    deprecated_since: _dt.date | None = None
    sunset: _dt.date | None = None
    replacement: str | None = None
    feature: str | None = None
    link: str | None = None
    #: Declared query parameter names and JSON request body field names (nested: "a.b").
    query_parameters: tuple[str, ...] = ()
    body_fields: tuple[str, ...] = ()

    def declared(self, location: str) -> tuple[str, ...]:
        """The declared names sent in ``location`` ("query" or "body")."""
        return self.query_parameters if location == "query" else self.body_fields

    @property
    def replacement_target(self) -> str | None:
        """The path or URL of the replacement, without its method."""
        if self.replacement is None:
            return None
        match = _REPLACEMENT.match(self.replacement)
        return match.group("target") if match else None


@dataclass(frozen=True)
class ServiceCatalog:
    """The endpoints of one service."""

    name: str
    endpoints: tuple[Endpoint, ...] = ()
    _index: Mapping[tuple[str, str], Endpoint] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Keys computed once per entry here; a span's route is keyed once (route_key's cache).
        index: dict[tuple[str, str], Endpoint] = {}
        for ep in self.endpoints:
            key = route_key(ep.route)
            if key is not None:  # parse_catalog refuses such a route; a hand-built one never matches
                index[ep.method, key] = ep
        object.__setattr__(self, "_index", index)

    def endpoint(self, method: str, route: str) -> Endpoint | None:
        """The entry for ``method route``, else the route's ``*`` entry, else None.

        ``route`` matches an entry with the same parameter slots in any syntax
        (``/v1/reports/:id`` and ``/v1/reports/{report_id}``); an unreadable one matches nothing.
        """
        key = route_key(route)
        if key is None:
            return None
        return self._index.get((method.upper(), key)) or self._index.get(("*", key))


@dataclass(frozen=True)
class Catalog:
    """All services of a catalog file."""

    services: tuple[ServiceCatalog, ...] = ()
    source: str | None = None
    _by_name: Mapping[str, ServiceCatalog] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {svc.name: svc for svc in self.services})

    def service(self, name: str) -> ServiceCatalog | None:
        return self._by_name.get(name)

    def endpoint(self, service: str, method: str, route: str) -> Endpoint | None:
        """The catalog entry of ``method route`` in ``service``, or None."""
        svc = self._by_name.get(service)
        return svc.endpoint(method, route) if svc is not None else None

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(svc.name for svc in self.services)


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog file; raises CatalogError naming the file."""
    data = load_file(path, "catalog", CatalogError)
    return parse_catalog(data, source=str(path))


def parse_catalog(data: Any, source: str = "<catalog>") -> Catalog:
    """Validate an already-loaded catalog document (a dict as YAML or JSON gives it)."""
    return _Parser(source).catalog(data)


def dump_catalog(catalog: Catalog, header: str | None = None) -> str:
    """The catalog as YAML in the documented format (round-trips through load_catalog)."""
    services: dict[str, Any] = {}
    for svc in catalog.services:
        endpoints = []
        for ep in svc.endpoints:
            entry: dict[str, Any] = {"method": ep.method, "route": ep.route}
            if ep.deprecated:
                entry["deprecated"] = ep.deprecated_since or True
            for key in ("sunset", "replacement", "feature", "link"):
                value = getattr(ep, key)
                if value is not None:
                    entry[key] = value
            parameters = {loc: list(ep.declared(loc)) for loc in PARAMETER_LOCATIONS if ep.declared(loc)}
            if parameters:
                entry["parameters"] = parameters
            endpoints.append(entry)
        services[svc.name] = {"endpoints": endpoints}
    text = yaml.safe_dump(
        {"services": services}, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    if header:
        lines = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
        text = lines + text
    return text


class _Parser(DocumentParser):
    error = CatalogError

    def catalog(self, data: Any) -> Catalog:
        if data is None:
            raise self.fail("", "empty catalog (expected a mapping with a 'services' key)")
        services = self.section(data, "services", "catalog")
        if services is None:
            return Catalog((), self.source)
        if not isinstance(services, dict):
            raise self.fail("services", f"expected a mapping of service names (got {_kind(services)})")
        parsed = []
        for name, body in services.items():
            if not isinstance(name, str) or not name:
                raise self.fail(f"services.{name}", "service name must be a non-empty string")
            parsed.append(self.service(name, body, f"services.{name}"))
        return Catalog(tuple(parsed), self.source)

    def service(self, name: str, body: Any, path: str) -> ServiceCatalog:
        if body is None:
            return ServiceCatalog(name)
        if not isinstance(body, dict):
            raise self.fail(path, f"expected a mapping with an 'endpoints' key (got {_kind(body)})")
        for key in body:
            if key != "endpoints":
                raise self.fail(f"{path}.{key}", "unknown key (allowed: endpoints)")
        raw = body.get("endpoints")
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise self.fail(f"{path}.endpoints", f"expected a list (got {_kind(raw)})")
        endpoints: list[Endpoint] = []
        seen: dict[tuple[str, str], int] = {}
        for i, item in enumerate(raw):
            ep = self.endpoint(item, f"{path}.endpoints[{i}]")
            key = (ep.method, parse_route(ep.route))  # endpoint() has checked that it parses
            if key in seen:
                raise self.fail(
                    f"{path}.endpoints[{i}]",
                    f"duplicate endpoint {ep.method} {ep.route} (also endpoints[{seen[key]}])",
                )
            seen[key] = i
            endpoints.append(ep)
        return ServiceCatalog(name, tuple(endpoints))

    def endpoint(self, item: Any, path: str) -> Endpoint:
        if not isinstance(item, dict):
            raise self.fail(path, f"expected a mapping (got {_kind(item)})")
        for key in item:
            if key not in _ENDPOINT_KEYS and not (isinstance(key, str) and key.startswith("x-")):
                allowed = ", ".join(_ENDPOINT_KEYS)
                raise self.fail(f"{path}.{key}", f"unknown key (allowed: {allowed}, or x-*)")
        method = self.string(item, "method", path, required=True).upper()
        if method not in HTTP_METHODS:
            raise self.fail(f"{path}.method", f"not an HTTP method (got {item['method']!r})")
        route = self.string(item, "route", path, required=True)
        if not route.startswith("/"):
            raise self.fail(f"{path}.route", f"must start with '/' (got {_short(route)})")
        try:
            parse_route(route)
        except RouteTemplateError as exc:
            raise self.fail(f"{path}.route", f"{exc} (in {_short(route)})") from None
        deprecated, since = self.deprecated(item.get("deprecated"), f"{path}.deprecated")
        sunset = self.date(item.get("sunset"), f"{path}.sunset")
        if since is not None and sunset is not None and sunset < since:
            raise self.fail(f"{path}.sunset", f"is before the deprecation date ({sunset} < {since})")
        replacement = self.string(item, "replacement", path)
        if replacement is not None:
            match = _REPLACEMENT.match(replacement)
            target = match.group("target") if match else ""
            if not match or not (target.startswith("/") or target.startswith(("http://", "https://"))):
                raise self.fail(
                    f"{path}.replacement",
                    f"expected '[METHOD ]/path' or an http(s) URL (got {replacement!r})",
                )
            if match.group("method") and match.group("method").upper() not in HTTP_METHODS:
                raise self.fail(f"{path}.replacement", f"not an HTTP method: {match.group('method')!r}")
        link = self.string(item, "link", path)
        if link is not None and not link.startswith(("http://", "https://", "/")):
            raise self.fail(f"{path}.link", f"expected an http(s) URL or a path (got {link!r})")
        declared = self.parameters(item.get("parameters"), f"{path}.parameters")
        return Endpoint(
            method=method,
            route=route,
            deprecated=deprecated,
            deprecated_since=since,
            sunset=sunset,
            replacement=replacement,
            feature=self.string(item, "feature", path),
            link=link,
            query_parameters=declared.get("query", ()),
            body_fields=declared.get("body", ()),
        )

    def parameters(self, value: Any, path: str) -> dict[str, tuple[str, ...]]:
        """``{query: [names], body: [names]}``: each name a printable string, once."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping with 'query' and/or 'body' lists (got {_kind(value)})")
        out: dict[str, tuple[str, ...]] = {}
        for location, names in value.items():
            if location not in PARAMETER_LOCATIONS:
                raise self.fail(f"{path}.{location}", "unknown key (allowed: query, body)")
            where = f"{path}.{location}"
            if names is None:
                continue
            if not isinstance(names, list):
                raise self.fail(where, f"expected a list of names (got {_kind(names)})")
            if len(names) > MAX_PARAMETER_NAMES:
                raise self.fail(where, f"more than {MAX_PARAMETER_NAMES} names ({len(names)})")
            seen: dict[str, int] = {}
            for i, name in enumerate(names):
                if not isinstance(name, str) or not name:
                    raise self.fail(f"{where}[{i}]", f"expected a non-empty string (got {_short(str(name))})")
                if len(name) > MAX_PARAMETER_NAME_LENGTH:
                    raise self.fail(
                        f"{where}[{i}]",
                        f"longer than {MAX_PARAMETER_NAME_LENGTH} characters ({_short(name)})",
                    )
                if not name.isprintable():
                    raise self.fail(f"{where}[{i}]", f"has a control character ({_short(name)})")
                if name in seen:
                    raise self.fail(f"{where}[{i}]", f"duplicate name {name!r} (also [{seen[name]}])")
                seen[name] = i
            out[location] = tuple(names)
        return out

    @overload
    def string(self, item: dict, key: str, path: str, required: Literal[True]) -> str: ...
    @overload
    def string(self, item: dict, key: str, path: str, required: bool = False) -> str | None: ...
    def string(self, item: dict, key: str, path: str, required: bool = False) -> str | None:
        value = item.get(key)
        if value is None:
            if required:
                raise self.fail(f"{path}.{key}", "required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{path}.{key}", f"expected a non-empty string (got {value!r})")
        return value.strip()

    def deprecated(self, value: Any, path: str) -> tuple[bool, _dt.date | None]:
        if value is None or value is False:
            return False, None
        if value is True:
            return True, None
        return True, self.date(value, path, allow="true, false or ")

    def date(self, value: Any, path: str, allow: str = "") -> _dt.date | None:
        if value is None:
            return None
        # YAML turns 2026-09-01 into a date, and a timestamp into a datetime.
        if isinstance(value, _dt.datetime):
            return value.date()
        if isinstance(value, _dt.date):
            return value
        if isinstance(value, str):
            try:
                return _dt.date.fromisoformat(value.strip())
            except ValueError:
                pass
        if allow:
            raise self.fail(path, f"expected {allow}a date YYYY-MM-DD (got {value!r})")
        raise self.fail(path, f"not a date (got {value!r})")


def _short(value: str) -> str:
    """``repr(value)``, cut to a readable length for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:70]}… ({len(value)} characters)"


def merge_endpoint(base: Endpoint | None, override: Endpoint | None) -> Endpoint | None:
    """Fields of ``override`` win where set; used to lay a catalog over a route's own flags."""
    if base is None or override is None:
        return override or base
    return Endpoint(
        method=override.method,
        route=override.route,
        deprecated=override.deprecated or base.deprecated,
        deprecated_since=override.deprecated_since or base.deprecated_since,
        sunset=override.sunset or base.sunset,
        replacement=override.replacement or base.replacement,
        feature=override.feature or base.feature,
        link=override.link or base.link,
        query_parameters=override.query_parameters or base.query_parameters,
        body_fields=override.body_fields or base.body_fields,
    )
